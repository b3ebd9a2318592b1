"""The one way this package makes a labelled image dataset: an `image` column and a ClassLabel
`label` column (so id2label always comes from the data), and the stores' `index` where given."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # datasets is imported when a dataset is made, not when the command line starts
    from datasets import Dataset


def image_dataset(columns: dict[str, list], *, names: list[str]) -> Dataset:
    """An image column and a ClassLabel label column (datasets is imported here, not at the top:
    the command line reads SOURCES without paying for it), and the stores' `index` where given."""
    from datasets import ClassLabel, Dataset, Features, Image, Value

    features = {"image": Image(), "label": ClassLabel(names=names)}
    if "index" in columns:
        features["index"] = Value("int64")
    return Dataset.from_dict(columns, features=Features(features))

"""Methods that wrap one of peft's tuners (peft's `tuners/<method>/`): `base.py` holds what they
share (peft's adapter file with the classifier head trained and saved beside it, modules_to_save),
and each tuner's spec is one module named as its `peft=` option; `peft_config.py` takes any other
peft tuner as data."""

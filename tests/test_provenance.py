"""Where a run came from: the git state a record keeps, read from a real (temporary) checkout."""

import subprocess

from peft_food.tracking.provenance import git_state


def git(repo, *args):
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )


def test_dirty_means_tracked_changes_and_untracked_files_are_only_counted(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_state(repo / "pkg") == {"sha": sha, "dirty": False, "untracked": 0}

    # What the docs have users make beside the code (docs/configuration.md): untracked, so the code that runs is the commit's.
    (repo / "my_conf" / "model").mkdir(parents=True)
    (repo / "my_conf" / "model" / "my_vit.yaml").write_text("name: my_vit\n")
    (repo / "exported").mkdir()
    (repo / "exported" / "model.safetensors").write_bytes(b"0")
    assert git_state(repo / "pkg") == {"sha": sha, "dirty": False, "untracked": 2}

    (repo / "pkg" / "code.py").write_text("x = 2\n")  # a tracked file changed: dirty
    assert git_state(repo / "pkg") == {"sha": sha, "dirty": True, "untracked": 2}
    git(repo, "checkout", "--", "pkg/code.py")
    git(repo, "add", "my_conf")  # staged, not committed: a tracked change too
    assert git_state(repo / "pkg") == {"sha": sha, "dirty": True, "untracked": 1}


def test_outside_a_checkout_nothing_is_known(tmp_path):
    assert git_state(tmp_path) == {"sha": None, "dirty": None, "untracked": None}

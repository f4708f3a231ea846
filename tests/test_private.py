"""What the engine writes is its user's alone: the data dir (others may only pass through, as
root, for the embedded PostgreSQL's own user), its files 0600 whatever an older run left, its
folder under the temp dir 0700, and a folder another user owns is refused, not used."""

import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from actors.errors import OperatorError
from engine import private


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_data_dir_and_its_files_are_private_even_over_an_older_runs(tmp_path):
    data = tmp_path / "billing-data"
    data.mkdir(mode=0o755)
    (data / "engine.json.tmp").write_text("left by an older run")
    os.chmod(data / "engine.json.tmp", 0o644)
    private.write_json(str(data / "engine.json"), {"pid": 1})
    expected = 0o711 if os.geteuid() == 0 else 0o700
    assert mode(data) == expected and mode(data / "engine.json") == 0o600
    (data / "engine.lock").write_text("")
    os.chmod(data / "engine.lock", 0o644)
    os.close(private.open_file(str(data / "engine.lock")))
    assert mode(data / "engine.lock") == 0o600
    assert mode(private.folder(str(data / "redis"))) == 0o700
    assert mode(private.tmp_folder()) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root")
def test_a_folder_another_user_owns_is_refused_and_nobody_reads_a_private_one(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)  # nobody
    with pytest.raises(OperatorError, match="another user"):
        private.folder(str(theirs))
    base = tempfile.mkdtemp()  # pytest's own folders are 0700: nobody would stop there
    try:
        os.chmod(base, 0o755)
        data = os.path.join(base, "data")
        private.write_json(os.path.join(data, "engine.json"), {"secret": "x"})
        for argv in (["ls", data], ["cat", os.path.join(data, "engine.json")], ["ls", base]):
            as_nobody = subprocess.run(
                ["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True
            )
            if argv == ["ls", base]:  # the parent is open: what stops nobody is the engine's
                assert as_nobody.returncode == 0 and "data" in as_nobody.stdout
            else:
                assert as_nobody.returncode != 0 and "Permission denied" in as_nobody.stderr
    finally:
        shutil.rmtree(base)

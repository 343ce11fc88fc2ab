"""Ctrl-C that never reaches the command as a KeyboardInterrupt is still an interruption.

Python runs the SIGINT handler between bytecodes, also in Python code a C extension calls back. pyarrow compares
extension types (`datasets`' Array2D, in every row of a build) by calling their Python methods, and when the
KeyboardInterrupt is raised there it drops it and fails with its own error (CI saw a build Ctrl-C'd while writing
end in `ArrowInvalid: arrays to be concatenated must be identically typed` and a traceback). `Tripwire` is such an
extension type that sends this process a real SIGINT from that callback, so the moment is not left to chance.
"""

import json
import signal
from pathlib import Path

import pyarrow as pa
import pytest

from salient_imagenet_builder.core import distributed
from salient_imagenet_builder.core.errors import Interrupted
from salient_imagenet_builder.core.interrupts import ctrl_c_received, ctrl_c_stops_once
from salient_imagenet_builder.core.staging import interruptible, move_into_place
from salient_imagenet_builder.core.units import Unit, UnitFolder, open_work, run_units


class Tripwire(pa.ExtensionType):
    """An int32 extension type whose `__arrow_ext_serialize__` (what pyarrow calls to compare two instances) sends
    SIGINT to this process once armed."""

    armed = False

    def __init__(self):
        super().__init__(pa.int32(), "salient_imagenet_builder.tests.tripwire")

    def __arrow_ext_serialize__(self) -> bytes:
        if Tripwire.armed:
            Tripwire.armed = False
            signal.raise_signal(signal.SIGINT)
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


def chunk() -> pa.Table:
    """Rows shaped as a build's: a list of structs holding the extension type."""
    values = pa.ExtensionArray.from_storage(Tripwire(), pa.array([1, 2, 3], pa.int32()))
    return pa.table({"features": pa.ListArray.from_arrays([0, 1, 3], pa.StructArray.from_arrays([values], ["nam"]))})


def two_chunks() -> pa.Table:
    """Two chunks with a type instance each, as the builder's spill files read back as one table: `take` concatenates
    them, and compares the two types (in Python) to do so."""
    return pa.concat_tables([chunk(), chunk()])


def test_pyarrow_error_after_ctrl_c_is_the_interruption_line_and_the_process_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match=r"interrupted; .*out is as it was before this run") as caught:
        with ctrl_c_stops_once(owns_process=False), interruptible(tmp_path / "out"):
            table = two_chunks()
            Tripwire.armed = True
            table.take(pa.array([0, 3]))
    assert isinstance(caught.value.__context__, pa.ArrowInvalid)  # what pyarrow made of the KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is before and not ctrl_c_received()


def test_the_same_error_without_ctrl_c_is_a_bug_and_keeps_its_traceback(tmp_path):
    with pytest.raises(pa.ArrowInvalid):
        with ctrl_c_stops_once(owns_process=False), interruptible(tmp_path / "out"):
            pa.concat_arrays([pa.array([1]), pa.array(["a"])])


def test_a_plain_ctrl_c_is_the_interruption_line_that_names_the_kept_work(tmp_path):
    (tmp_path / ".out.partial" / "work").mkdir(parents=True)
    with pytest.raises(Interrupted, match=r"the finished work is kept in .*\.out\.partial"):
        with ctrl_c_stops_once(owns_process=False), interruptible(tmp_path / "out"):
            signal.raise_signal(signal.SIGINT)


class Result:
    def save(self, folder: Path) -> None:
        (folder / "rows.json").write_text("[]")

    def summary(self) -> dict:
        return {}


def swallowing_worker(unit: Unit) -> Result:
    """A unit whose library catches the KeyboardInterrupt (as pyarrow does) and carries on."""
    if unit.index == 1:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
    return Result()


def test_a_unit_whose_ctrl_c_was_swallowed_is_not_committed_and_the_run_stops(tmp_path):
    work = tmp_path / "work"
    open_work(work, {"build": "test"}, restart=False)
    folder = UnitFolder(work, "scan")
    plan = [Unit(index, {}) for index in range(4)]
    with pytest.raises(KeyboardInterrupt), ctrl_c_stops_once(owns_process=False):
        run_units(plan, folder, lambda: swallowing_worker, distributed.World())
    assert folder.done() == {0}  # unit 0 finished before Ctrl-C; unit 1 ran on after it and is not trusted
    assert json.loads(folder.marker(0).read_text())["unit"] == 0


def test_nothing_is_published_after_a_swallowed_ctrl_c(tmp_path):
    staging, out = tmp_path / ".out.partial", tmp_path / "out"
    staging.mkdir()
    (staging / "data.parquet").write_bytes(b"rows")
    with pytest.raises(KeyboardInterrupt), ctrl_c_stops_once(owns_process=False):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        move_into_place(staging, out)
    assert not out.exists() and (staging / "data.parquet").read_bytes() == b"rows"

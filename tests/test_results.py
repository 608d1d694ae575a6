import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from falcon_h1r.results import SectionWriter, atomic_write_text  # noqa: E402


def test_writer_outputs_and_provenance(tmp_path):
    w = SectionWriter("tiny", "02_sft", params={"lr": 0.1}, seed=3, root=tmp_path)
    w.table("acc", pd.DataFrame({"run": ["a", "b"], "acc": [0.5, 0.25]}), caption="Ours (tiny, synthetic)")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    w.figure("curve", fig)
    w.summary({"best": 0.5})
    w.summary({"other": 1})
    w.provenance()
    d = tmp_path / "tiny" / "02_sft"
    assert (d / "acc.csv").read_text().splitlines()[0] == "run,acc"
    assert (d / "acc.md").read_text().startswith("Ours (tiny, synthetic)")
    assert (d / "curve.png").stat().st_size > 0 and (d / "curve.pdf").stat().st_size > 0
    assert json.loads((d / "summary.json").read_text()) == {"best": 0.5, "other": 1}
    prov = json.loads((d / "provenance.json").read_text())
    for key in ("git", "packages", "device", "seed", "preset", "parameters", "wall_time_s"):
        assert key in prov
    assert prov["parameters"] == {"lr": 0.1} and prov["packages"]["transformers"] == "5.23.0"


def test_summary_rejects_nested_values(tmp_path):
    w = SectionWriter("tiny", "02_sft", root=tmp_path)
    with pytest.raises(TypeError, match="must be a number"):
        w.summary({"x": [1, 2]})


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_text(path, Boom())  # write() refuses a non-str: the old content must survive
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown section '07_x'; sections are 01_data_curation"):
        SectionWriter("tiny", "07_x", root=tmp_path)


def test_rendering_keeps_the_provenance_of_the_run_that_computed_the_records(tmp_path):
    """A CPU machine renders committed GPU records: the GPU run's provenance must survive, nested."""
    from falcon_h1r.results import SectionWriter

    SectionWriter("small", "03_rl", root=tmp_path, seed=0, params={"a": 1}, mode="computed").provenance({"gpu": "H100"})
    SectionWriter("small", "03_rl", root=tmp_path, seed=0, params={"a": 1}, mode="rendered").provenance()
    SectionWriter("small", "03_rl", root=tmp_path, seed=0, params={"a": 1}, mode="rendered").provenance()
    prov = json.loads((tmp_path / "small" / "03_rl" / "provenance.json").read_text())
    assert prov["mode"] == "rendered"
    assert prov["computed_run"]["mode"] == "computed" and prov["computed_run"]["gpu"] == "H100"

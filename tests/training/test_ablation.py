"""The ablation's head specs and its mean ± std table (no training: rows are built by hand)."""

import pytest

from training.ablation import AblationRow, HeadSpec, ablation_markdown, mean_std
from training.config import TrainConfig
from training.evaluation import RetrievalMetrics


def test_head_specs_with_options():
    assert HeadSpec.parse("mg-rafa:4") == HeadSpec("mg-rafa", 4, 1)
    spec = HeadSpec.parse("sg-rafa:1,reference=frame")
    assert (spec.splits, spec.reference, spec.slug, spec.label) == (1, "frame", "sg-rafa-s1-ref-frame",
                                                                     "SG-RAFA(S=1) ref=frame")  # fmt: skip
    spec = HeadSpec.parse("mg-rafa:4,s=8")
    assert (spec.reduction, spec.slug, spec.label) == (8, "mg-rafa-n4-r8", "MG-RAFA(N=4) s=8")
    assert HeadSpec.parse("sg-rafa:1,reference=all").modes == ("centres", "strided", "consecutive")
    config = HeadSpec.parse("sg-rafa:1,reference=all").apply(TrainConfig(), seed=5)
    assert (config.seed, config.model.reference, config.model.reference_frames) == (5, "all", config.data.num_frames)
    for bad in ("mg-rafa:4,s=x", "mg-rafa:4,reference=nodes", "mg-rafa:4,depth=2", "rafa:2"):
        with pytest.raises(ValueError):
            HeadSpec.parse(bad)


def row(seed: int, value: float, label: str = "MG-RAFA(N=4)") -> AblationRow:
    metrics = RetrievalMetrics(value, value, value, value, value)
    return AblationRow(label=label, spec="mg-rafa:4", head="mg-rafa", granularities=4, splits=1, metrics=metrics,
                       cmc=None, epochs=1, wall_time_s=60.0, head_parameters=1000, total_parameters=2000,
                       checkpoint=None, seed=seed, test_mode="strided",
                       modes={"strided": metrics, "centres": RetrievalMetrics(0.1, 0.1, 0.1, 0.1, 0.1)},
                       command="python -m training ablation --seeds 0 1 2")  # fmt: skip


def strided_config() -> TrainConfig:
    import dataclasses

    config = TrainConfig()
    return dataclasses.replace(config, data=dataclasses.replace(config.data, test_mode="strided"))


def test_table_reports_mean_and_sample_std_over_seeds_and_every_mode():
    assert mean_std([0.5]) == "50.0" and mean_std([0.4, 0.5, 0.6]) == "50.0 ± 10.0"
    rows = [row(0, 0.4), row(1, 0.5), row(2, 0.6)]
    table = ablation_markdown(rows, strided_config(), "test machine")
    assert "| MG-RAFA(N=4) | 0, 1, 2 | 50.0 ± 10.0 | 50.0 ± 10.0 |" in table
    # Runs that never measured the config's mode show n/a there, never another mode's numbers.
    assert "| MG-RAFA(N=4) | 0, 1, 2 | n/a | n/a |" in ablation_markdown(rows, TrainConfig(), "test machine")
    assert "| MG-RAFA(N=4) | 0, 1, 2 | 10.0 ± 0.0 / 10.0 ± 0.0 | 50.0 ± 10.0 / 50.0 ± 10.0 | n/a | n/a |" in table
    assert "python -m training ablation --seeds 0 1 2" in table


def test_the_main_table_shows_the_configs_test_time_mode_from_the_runs_every_mode_results():
    import dataclasses

    rows = [dataclasses.replace(row(seed, 0.5), modes={**row(seed, 0.5).modes,
                                                       "consecutive": RetrievalMetrics(*[0.7] * 5)})
            for seed in (0, 1)]  # trained with strided as their mode, consecutive measured beside it
    consecutive = ablation_markdown(rows, TrainConfig(), "test machine")
    assert "test-time mode `consecutive`" in consecutive and "| MG-RAFA(N=4) | 0, 1 | 70.0 ± 0.0 |" in consecutive
    assert "| MG-RAFA(N=4) | 0, 1 | 50.0 ± 0.0 |" in ablation_markdown(rows, strided_config(), "test machine")


def test_report_only_gathers_finished_runs_and_trains_nothing(tmp_path, monkeypatch):
    import dataclasses
    import json

    import training.ablation as ablation

    def no_training(*args, **kwargs):
        raise AssertionError("report_only must not train")

    monkeypatch.setattr(ablation, "train_and_evaluate", no_training)
    for seed, value in ((0, 0.4), (2, 0.6)):  # seed 1 has not finished
        run_dir = tmp_path / "mg-rafa-n4" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps(row(seed, value).as_json()))
    config_args = ["--config", "training/configs/synthetic_ablation.yaml", "--set", "optim.epochs=3"]
    rows = ablation.run_ablation(strided_config(), ["mg-rafa:4", "baseline"], tmp_path, seeds=[0, 1, 2],
                                 report_only=True, config_args=config_args)  # fmt: skip
    assert [(r.label, r.seed) for r in rows] == [("MG-RAFA(N=4)", 0), ("MG-RAFA(N=4)", 2)]
    table = (tmp_path / "ablation.md").read_text()
    assert "| MG-RAFA(N=4) | 0, 2 | 50.0 ± 14.1 |" in table and "Baseline" not in table
    # The row's own command: its head and the seeds it holds, not the command line of whoever trained it.
    assert ("# MG-RAFA(N=4), seeds 0, 2\npython -m training ablation --config training/configs/synthetic_ablation.yaml "
            f"--set optim.epochs=3 --heads mg-rafa:4 --seeds 0 2 --out {tmp_path} --resume\n") in table
    assert "--seeds 0 1 2" not in table
    # A run trained with another config than the report's: its own recorded command, not a made-up one.
    from training.config import save_config

    other = dataclasses.replace(strided_config(), optim=dataclasses.replace(strided_config().optim, epochs=99))
    save_config(HeadSpec.parse("mg-rafa:4").apply(other, 2), tmp_path / "mg-rafa-n4" / "seed2" / "config.yaml")
    ablation.run_ablation(strided_config(), ["mg-rafa:4"], tmp_path, seeds=[0, 1, 2], report_only=True,
                          config_args=config_args)  # fmt: skip
    table = (tmp_path / "ablation.md").read_text()
    assert "--resume" not in table and "python -m training ablation --seeds 0 1 2" in table


def test_paired_comparisons_difference_each_seed_and_set_it_beside_the_papers_order():
    import dataclasses

    def run(spec: str, label: str, seed: int, value: float) -> AblationRow:
        head = HeadSpec.parse(spec)
        metrics = RetrievalMetrics(value, value, value, value, value)
        return dataclasses.replace(row(seed, value, label), spec=spec, head=head.head,
                                   granularities=head.granularities, splits=head.splits,
                                   modes={"consecutive": metrics})  # fmt: skip

    # The baseline is ahead in seeds 0 and 1 by 10 and 2 points; seed 2 has no baseline run to pair with.
    rows = [run("baseline", "Baseline", 0, 0.60), run("baseline", "Baseline", 1, 0.50),
            run("mg-rafa:4", "MG-RAFA(N=4)", 0, 0.50), run("mg-rafa:4", "MG-RAFA(N=4)", 1, 0.48),
            run("mg-rafa:4", "MG-RAFA(N=4)", 2, 0.90), run("mg-rafa:1", "MG-RAFA(N=1)", 0, 0.40)]  # fmt: skip
    table = ablation_markdown(rows, TrainConfig(), "test machine")
    assert "| MG-RAFA(N=4) - Baseline | the MG-RAFA module | 0, 1 | -6.0 ± 5.7 | -6.0 ± 5.7 | +3.8 / +2.9 | " \
           "reversed |" in table  # fmt: skip
    # A comparison the paper does not draw is reported without a paper column; heads without a partner are not.
    assert "| MG-RAFA(N=4) - MG-AFA(N=4)" not in table
    rows.append(run("mg-rafa:2", "MG-RAFA(N=2)", 0, 0.45))
    table = ablation_markdown(rows, TrainConfig(), "test machine")
    assert "| MG-RAFA(N=2) - MG-RAFA(N=1) | N=2 vs N=1 | 0 | +5.0 | +5.0 | not in the paper | - |" in table
    assert "| MG-RAFA(N=4) - MG-RAFA(N=2) | N=4 vs N=2 | 0 | +5.0 | +5.0 | +0.4 / +0.4 | same |" in table
    # A run that never measured the table's mode is left out of the pair and of its seeds.
    rows[3] = dataclasses.replace(rows[3], modes={"strided": rows[3].modes["consecutive"]})  # MG-RAFA seed 1
    table = ablation_markdown(rows, TrainConfig(), "test machine")
    assert "| MG-RAFA(N=4) - Baseline | the MG-RAFA module | 0 | -10.0 | -10.0 | +3.8 / +2.9 | reversed |" in table

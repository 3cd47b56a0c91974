"""The ``soilsource`` command line: a thin layer over the Python API.

Exit codes: 0 success; 2 bad input or configuration (one line on stderr naming
the file and the key, column or row, no traceback); 1 internal error.
"""

from __future__ import annotations

import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from typer.exceptions import TyperException

from soilsource import __version__
from soilsource.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    InputError,
    environment_error,
)
from soilsource.progress import stdout

if TYPE_CHECKING:
    from soilsource.config import Config

app = typer.Typer(
    name="soilsource",
    help=(
        "Find the likely sources of soil heavy-metal (Cd) pollution from remote-sensing "
        "imagery and soil samples, and explain the answer on a map."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    epilog=(
        "Start with 'soilsource check CONFIG'. Every configuration key: docs/configuration.md "
        "(installed as configuration.md beside the soilsource package); how to read the "
        "report: docs/report.md; README.md in the soilsource repository for the rest."
    ),
)


Device = Literal["auto", "cpu", "cuda"]
"""Values of ``--device`` (checked before anything is written)."""

DEMO_CITY_PX = 512
"""Region side of ``demo``: about 150 samples per region, synth in ~15 s on 2 cores."""
DEMO_PATCH_M = 640.0
DEMO_FOLDS = 4
DEMO_EPOCHS = 10
DEMO_MEMBERS = 1
DEMO_MIN_STEPS = 0
DEMO_PRETRAIN = False
"""``demo`` trains on 640 m patches, 4 folds, one network (not the default ensemble of
``model.members``) for exactly 10 epochs (no ``train.min_steps``), without the
self-supervised pretraining of ``model.pretrain`` (about 30 s more): the whole pipeline in
about 3 minutes on 2 cores. The defaults train about 20 times as much (three members, at
least 300 steps) and are what ``docs/benchmarks.md`` measures; the full-size city of
``soilsource synth`` with them takes hours on 2 cores."""
QUICK_CITY_PX = 256
"""Region side of ``demo --quick``: small enough for tests, every class still present."""
QUICK_PATCH_M = 640.0
QUICK_FOLDS = 3
QUICK_EPOCHS = 3
"""``demo --quick`` also uses 640 m patches, 3 folds and 3 epochs: the same pipeline in
under a minute, for tests."""


def demo_profile(quick: bool = False) -> tuple[int, float, int, int]:
    """City side (px), patch side (m), folds and epochs of ``soilsource demo [--quick]``."""
    if quick:
        return QUICK_CITY_PX, QUICK_PATCH_M, QUICK_FOLDS, QUICK_EPOCHS
    return DEMO_CITY_PX, DEMO_PATCH_M, DEMO_FOLDS, DEMO_EPOCHS


def apply_demo_profile(config: Config, *, quick: bool = False, training: bool = True) -> None:
    """Give ``config`` (the city's own) what ``soilsource demo [--quick]`` runs.

    Its patch side and folds and, with ``training``, its cheap training: one network for
    exactly the profile's epochs, without ``train.min_steps`` or pretraining. The demo and
    the benchmarks that measure it (``bench_explain``, ``bench_context``) all call this, so
    they measure what the demo runs.
    """
    _, patch_m, folds, epochs = demo_profile(quick)
    config.patch.size_m, config.train.folds = patch_m, folds
    if training:
        config.train.max_epochs, config.train.min_steps = epochs, DEMO_MIN_STEPS
        config.model.members, config.model.pretrain = DEMO_MEMBERS, DEMO_PRETRAIN


def _version(value: bool) -> None:
    """``--version``: the installed distribution's version (the wheel's or the editable one's)."""
    if value:
        try:
            version = metadata.version("soilsource")
        except metadata.PackageNotFoundError:  # run from a source tree that is not installed
            version = __version__
        stdout.print(f"soilsource {version}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """soilsource command line."""


def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write (must not exist or be empty).")
    ],
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed; the same seed gives the same city.")
    ] = 0,
    size_px: Annotated[
        int | None,
        typer.Option(
            "--size-px",
            min=64,
            help="Side of each region in 10 m pixels (smaller is faster).",
            show_default="the full-size city",
        ),
    ] = None,
) -> None:
    """Write the synthetic six-region city with its known truth and a ready config.yaml."""
    from soilsource.synth import write_city

    summary = write_city(out, seed=seed, size_px=size_px)
    _print_city_summary(summary)
    stdout.print(f"wrote {out}")


def demo(
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("soilsource-demo"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller, faster version for tests.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the city and of training.")] = 0,
    metals: Annotated[
        bool,
        typer.Option(
            "--metals",
            help=f"{', '.join(DEMO_METALS)} with source apportionment (sources:), not Cd alone.",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a complete run in OUT.")] = False,
    device: Annotated[
        Device | None, typer.Option("--device", help="auto, cpu or cuda.", show_default="auto")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Dask scheduler address for maps and occlusion.",
            show_default="local",
        ),
    ] = None,
) -> None:
    """Build the synthetic city in OUT/city and run the whole pipeline on it into OUT."""
    from soilsource.config import load_config
    from soilsource.pipeline.preflight import plan_several
    from soilsource.pipeline.runner import execute, execute_several
    from soilsource.rundir import check_out, claim, prepare
    from soilsource.synth import write_city

    check_out(out, force=force)  # before the lock file is written into it
    with claim(out):  # one run per directory (the city is its input, written first)
        run_dir = prepare(out, force=force)
        summary = write_city(run_dir / "city", seed=seed, size_px=demo_profile(quick)[0])
        _print_city_summary(summary)
        config = load_config(run_dir / "city" / "config.yaml")
        config.train.seed = seed
        config.compute.scheduler = scheduler
        # in the run's config.yaml, so `soilsource run OUT/config.yaml` repeats the demo
        apply_demo_profile(config, quick=quick)
        if metals:
            several = demo_metals_config(config)
            plan_several(several)  # as run_several: every metal and the sources first
            metrics, truth = execute_several(several, run_dir, device=device).metrics, None
        else:
            metrics, truth = execute(config, run_dir, device=device).metrics, summary
    _print_metrics(metrics, truth)
    stdout.print(f"run directory: {run_dir}")
    stdout.print(f"report: {run_dir / 'report.html'}")


def run(
    config: Annotated[Path, typer.Argument(help="The YAML configuration file.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a complete run in OUT.")] = False,
    device: Annotated[
        Device | None,
        typer.Option(
            "--device",
            help="auto, cpu or cuda (overrides compute.device).",
            show_default="compute.device of CONFIG",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the unfinished (killed) run in OUT with the same CONFIG."
        ),
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Dask scheduler address for maps and occlusion (overrides compute.scheduler).",
            show_default="compute.scheduler of CONFIG",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline of CONFIG into OUT (metrics, maps, hotspots, models)."""
    from soilsource.config import load_config
    from soilsource.pipeline.runner import run as run_pipeline

    settings = load_config(config)
    if scheduler is not None:
        settings.compute.scheduler = scheduler
    result = run_pipeline(settings, out, force=force, device=device, resume=resume)
    _print_metrics(result.metrics)
    stdout.print(f"run directory: {result.out}")
    stdout.print(f"report: {result.out / 'report.html'}")


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by run or demo.")],
) -> None:
    """(Re)build RUN_DIR/report.html from the files of a run directory."""
    from soilsource.report.document import write_report

    stdout.print(f"report: {write_report(run_dir)}")


def check(
    config: Annotated[Path, typer.Argument(help="The YAML configuration file.")],
) -> None:
    """Validate the inputs of CONFIG and print a summary (no training, writes nothing)."""
    from soilsource.pipeline.check import check_all, print_summary

    for summary in check_all(config):  # one per metal
        print_summary(summary, stdout)


def predict(
    run_dir: Annotated[Path, typer.Argument(help="Complete run directory whose model to apply.")],
    imagery: Annotated[
        Path,
        typer.Option(
            "--imagery",
            help="GeoTIFF with the training imagery's bands (names, order, scales, pixel size).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the maps to.")],
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            help="Region whose model and rule to apply.",
            show_default="the run's only region",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a complete result in OUT.")
    ] = False,
) -> None:
    """Apply a run's model to new imagery: probability and concentration maps, short report."""
    from soilsource.pipeline.predict import predict as apply_model

    result = apply_model(run_dir, imagery, out, region=region, force=force)
    for kind, path in result.maps.items():
        stdout.print(f"{kind}: {path}")
    stdout.print(f"report: {result.out / 'report.html'}")


YOUR_DATA = "Your data, in the order of use"
SYNTHETIC = "The synthetic city (known truth)"
for _command, _panel in (
    (check, YOUR_DATA),
    (run, YOUR_DATA),
    (report, YOUR_DATA),
    (predict, YOUR_DATA),
    (synth, SYNTHETIC),
    (demo, SYNTHETIC),
):
    app.command(rich_help_panel=_panel)(_command)


def _print_city_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title="Synthetic city (truth)")
    for col in ("region", "n", "n_pos", "oracle AUC", "top land use"):
        table.add_column(col)
    for name, r in summary["regions"].items():
        ranking = r.get("landuse_ranking", [])
        top = ranking[0] if ranking else ""
        table.add_row(name, str(r["n"]), str(r["n_pos"]), f"{r['oracle_auc']:.3f}", top)
    stdout.print(table)


DEMO_METALS = ("Cd", "Pb", "Zn")
"""``demo --metals``: three of the city's metals (the fewest source apportionment takes),
each under its own GB 15618-2018 row, and their source factors learned from the imagery."""


def demo_metals_config(config):
    """The demo's configuration with :data:`DEMO_METALS` and a ``sources:`` section."""
    from soilsource.config import Config
    from soilsource.synth.cadmium import DETECTION_LIMIT
    from soilsource.synth.metals import COLUMNS, DETECTION_LIMIT_MGKG

    limits = {"Cd": DETECTION_LIMIT, **DETECTION_LIMIT_MGKG}
    raw = config.model_dump()
    raw["metal"] = list(DEMO_METALS)
    raw["samples"]["value"] = {m: COLUMNS[m] for m in DEMO_METALS}
    raw["sources"] = {"detection_limit": {m: limits[m] for m in DEMO_METALS}}
    several = Config.model_validate(raw)
    several._source = config.source
    return several


def _print_several(metrics: dict) -> None:
    """The AUC per run (metal or source factor) and region of a several-metal run."""
    from rich.table import Table

    table = Table(title="ROC AUC per metal, source factor and region (out-of-fold)")
    for col in ("run", "region", "n", "positive", "SI-LICNet [95% CI]"):
        table.add_column(col)
    for key, run in metrics["runs"].items():
        for name, r in run["regions"].items():
            lo, hi = r.get("auc_ci95") or (None, None)
            auc = (
                "n/a: " + r.get("auc_null_reason", "")
                if r.get("auc") is None
                else (f"{r['auc']:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""))
            )
            table.add_row(run.get("title", key), name, str(r["n"]), str(r["n_pos"]), auc)
    stdout.print(table)


def _print_metrics(metrics: dict, truth: dict | None = None) -> None:
    """The per-region AUC table of a run (with the oracle AUC when the truth is known);
    for a several-metal run, the table of every metal and source factor."""
    from rich.table import Table

    if metrics.get("several"):
        _print_several(metrics)
        return

    def auc(entry: dict) -> str:
        if entry.get("auc") is None:
            return "n/a"
        lo, hi = entry.get("auc_ci95") or (None, None)
        ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
        return f"{entry['auc']:.3f}{ci}"

    baselines = sorted({b for r in metrics["regions"].values() for b in r.get("baselines", {})})
    table = Table(title=f"ROC AUC per region ({metrics['cv']} CV, out-of-fold)")
    for col in ("region", "n", "positive", "SI-LICNet [95% CI]", *baselines):
        table.add_column(col)
    ceilings = ("visible_oracle_auc", "oracle_auc")  # what the imagery can show; the truth
    if truth:
        table.add_column("visible oracle")
        table.add_column("oracle")
    for name, r in metrics["regions"].items():
        row = [name, str(r["n"]), str(r["n_pos"]), auc(r)]
        row += [auc(r["baselines"].get(b, {})) for b in baselines]
        if truth:
            found = truth["regions"][name]
            row += [f"{found[k]:.3f}" if found.get(k) is not None else "n/a" for k in ceilings]
        table.add_row(*row)
    stdout.print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code instead of raising."""
    try:
        rv = app(args=argv, prog_name="soilsource", standalone_mode=False)
    except TyperException as exc:  # bad arguments or options (click's UsageError)
        if str(exc):  # empty when no arguments were given: help is printed instead
            print(f"soilsource: error: {_usage_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_BAD_INPUT)
    except InputError as exc:
        print(f"soilsource: error: {exc.line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        problem = environment_error(exc)  # disk full, permission denied: not a bug
        if problem is not None:
            print(f"soilsource: error: {problem.line()}", file=sys.stderr)
            return EXIT_BAD_INPUT
        # a bug in soilsource, not the user's input
        traceback.print_exc(file=sys.stderr)
        print("soilsource: internal error (a bug); please report it", file=sys.stderr)
        return EXIT_INTERNAL
    # In non-standalone mode typer returns the exit code of typer.Exit, or None; Ctrl-C
    # becomes Exit(130). Outputs are atomic, so what is in a run directory is whole.
    if rv == EXIT_INTERRUPTED:
        print("soilsource: interrupted; 'soilsource run ... --resume' continues", file=sys.stderr)
    return rv if isinstance(rv, int) else EXIT_OK


def _usage_line(exc: TyperException) -> str:
    """One line for a usage error: the command, what is wrong, where to get help."""
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message} (see '{ctx.command_path} --help')"


if __name__ == "__main__":
    sys.exit(main())

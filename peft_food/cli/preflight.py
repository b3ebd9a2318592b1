"""A Hydra command line checked before Hydra runs it: composed here once, the way Hydra is about to,
so every mistake is one line (`<prog>: error: ...`, exit 2) before any run dir is made or torch loads.

Hydra's own errors run 7-19 lines (and `peft.rank=8` suggests `+peft.rank=8`, which fails too); a
typo'd top-level key (`+modle=vit_tiny`) or a sweep without `-m` would run silently; an online W&B
run without a key or a SLURM launcher off a cluster fail only after the run dir is made, in 25-32
lines. Each is one line here, naming the fix.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable

# Hydra internals with no public counterpart (tests/test_architecture.py allows these and no others):
# - get_args_parser: the parser of Hydra's own flags (-m, -cn, --config-dir, --cfg, ...), which
#   @hydra.main builds privately; a copy of it would drift from the Hydra that then parses argv.
# - Hydra.compose_config with run_mode=MULTIRUN, from_shell=True: public `hydra.compose` always
#   composes a single run (run_mode=RUN, from_shell=False), so it refuses `-m a=1,2` outright and
#   skips nothing missing; it also cannot take --config-dir's folder ahead of the packaged one.
# - create_automatic_config_search_path: the search path @hydra.main builds for CONF_DIR, which
#   Hydra.create_main_hydra2 takes (public initialize_config_dir builds it only for `compose`).
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError

from peft_food.cli import one_line_errors
from peft_food.cli.help import Command, answered_help, flow
from peft_food.cli.hub import offline_unless_reachable
from peft_food.config import CONF_DIR, LoggerSpec, check_top_level, parse_config
from peft_food.data.sources import check_root
from peft_food.errors import ConfigError, first_line
from peft_food.tracking.login import require_login

LAUNCHER_PLUGIN = "hydra_plugins.hydra_submitit_launcher"


def compose(argv: list[str], *, config_name: str) -> tuple[DictConfig, bool] | None:
    """The config (with its hydra node) this command line composes, and whether it is a multirun;
    None when it asks for something other than a run (--cfg, --info, -sc, --hydra-help)."""
    args, unknown = get_args_parser().parse_known_args(argv)
    if args.cfg or args.info or args.shell_completion or args.hydra_help or args.help or args.config_path:
        return None
    search_path = create_automatic_config_search_path(None, None, CONF_DIR)
    if args.config_dir is not None:
        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            raise ConfigError(f"--config-dir {args.config_dir} is not a directory: pass your config folder's path")
        search_path.prepend(provider="command-line", path=f"file://{config_dir}", anchor="schema")
    where = Where(search_path, config_name=args.config_name or config_name)
    if unknown:  # `--epochs 3`: Hydra's parser would print 9 lines of usage
        raise ConfigError(flag_error(unknown, argv=argv, where=where))
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name=config_name, config_search_path=search_path)
        mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
        cfg = hydra.compose_config(
            args.config_name or config_name, args.overrides, run_mode=mode, with_log_configuration=False
        )
    except HydraException as err:
        raise ConfigError(hydra_error(err, overrides=args.overrides, where=where)) from None
    finally:
        GlobalHydra.instance().clear()  # Hydra's own run initialises it again
    return cfg, args.multirun or cfg.hydra.mode == RunMode.MULTIRUN


@dataclass(frozen=True)
class Where:
    """The config search path and entry config a command line composes: what an error message
    looks a key up in, composing again (a single run) without the override that failed."""

    search_path: Any
    config_name: str

    def compose(self, overrides: list[str]) -> DictConfig | None:
        GlobalHydra.instance().clear()
        try:
            hydra = Hydra.create_main_hydra2(task_name=self.config_name, config_search_path=self.search_path)
            return hydra.compose_config(self.config_name, overrides, run_mode=RunMode.RUN, with_log_configuration=False)
        except HydraException:
            return None
        finally:
            GlobalHydra.instance().clear()

    def value(self, key: str, *, overrides: list[str]) -> Any:
        cfg = self.compose(overrides)
        return None if cfg is None else OmegaConf.select(cfg, key, default=None)


def flag_error(unknown: list[str], *, argv: list[str], where: Where) -> str:
    """`--epochs 3` (or `--epochs=3`, `--batch-size 64`) as the key=value it means: config keys are
    set as Hydra overrides, and the composed config says which key a flag's name is."""
    flag = next(u for u in unknown if u.startswith("-"))
    name, _, value = flag.lstrip("-").partition("=")
    at = argv.index(flag)
    if not value and at + 1 < len(argv) and "=" not in argv[at + 1] and not argv[at + 1].startswith("-"):
        value = argv[at + 1]
    cfg = where.compose([])
    leaves = leaf_values(cfg) if cfg is not None else {}
    overrides = [f"{key}={value or '...'}" for key in leaves if key.rpartition(".")[2] == name.replace("-", "_")]
    # `--fp16`: a switch named after a value some key takes (train.precision=fp16).
    overrides = overrides or [f"{key}={name}" for key, now in leaves.items() if not value and now == name]
    if not overrides:
        return f"{flag} is not an option: set config keys as key=value (--help lists the groups and keys)"
    return f"{flag} is not an option: config keys are set as key=value, here {' or '.join(overrides)}"


def leaf_values(cfg: DictConfig) -> dict[str, Any]:
    """Every dotted key (hydra's own left out) with its value as written (interpolations unresolved)."""
    found = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                found[f"{prefix}{key}"] = value

    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("hydra", None)
    walk(tree, "")
    return found


def hydra_error(err: HydraException, *, overrides: list[str], where: Where | None = None) -> str:
    """Hydra's composition error as one line naming the fix."""
    text, cause = str(err), err.__cause__
    if text.startswith("Error merging override") and isinstance(cause, ValidationError) and cause.full_key:
        bad = text.removeprefix("Error merging override").strip()
        current = where.value(str(cause.full_key), overrides=[o for o in overrides if o != bad]) if where else None
        return value_error(cause, override=bad, current=current)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        if (
            group == "hydra/launcher"
            and name.startswith("submitit")
            and importlib.util.find_spec(LAUNCHER_PLUGIN) is None
        ):
            chosen = next((o for o in overrides if o.startswith("hydra/launcher=")), "this launcher")
            return f"{chosen} needs the submitit launcher plugin: pip install 'peft-food[slurm]'"
        return f"{group}={name} is not an option: choose one of {', '.join(err.options or [])}"
    if (found := re.match(r"Could not override '([^']+)'", text)) and getattr(cause, "parent_node", None) is not None:
        key, parent = found.group(1), found.group(1).rpartition(".")[0]
        return f"{key} is not a key of {parent}: its keys are {', '.join(map(str, cause.parent_node.keys()))}"
    if found := re.match(r"Ambiguous value for argument '([^=]+)=(.*)'", text):
        return (
            f"{found.group(1)}={found.group(2)} is a sweep: add -m to run one job per value "
            f"(or {found.group(1)}=[{found.group(2)}] for a list)"
        )
    if found := re.match(r"Could not append to config. An item is already at '([^']+)'", text):
        return f"+{found.group(1)}=...: {found.group(1)} exists already: drop the + to set it"
    bad = next((o for o in overrides if not _parses(o)), None)
    return (
        f"{bad}: {first_line(err)} (the override grammar: key=value, group=option, +key=value)"
        if bad
        else first_line(err)
    )


# omegaconf's words for the type it could not convert to -> what the user gives instead.
KINDS = {"Float": "a number", "Integer": "a whole number", "bool": "true or false"}


def value_error(cause: ValidationError, *, override: str, current: Any) -> str:
    """`train.lr=abc`: the key's type, omegaconf's reason, and the value it has now as the example."""
    key = str(cause.full_key)
    kind = next((words for name, words in KINDS.items() if f" {name}" in cause.msg), "another type")
    example = f": e.g. {key}={flow(current)} (its value now)" if current is not None else ""
    return f"{override}: {key} takes {kind} ({first_line(cause)}){example}"


def _parses(override: str) -> bool:
    try:
        OverridesParser.create().parse_override(override)
        return True
    except HydraException:
        return False


def check_run(cfg: DictConfig, *, multirun: bool, prog: str, extra_keys: tuple[str, ...] = ()) -> None:
    """Every check a composed command line gets before Hydra runs it (a single run: parse_config too)."""
    check_top_level(cfg, extra=extra_keys)
    choices = cfg.hydra.runtime.choices
    if not multirun and choices.get("sweep"):
        raise ConfigError(f"+sweep={choices.sweep} is a sweep: run it with -m ({prog} -m +sweep={choices.sweep} ...)")
    if multirun:
        check_launcher(cfg)
    check_dir_names(cfg, multirun=multirun)
    job = copy.deepcopy(cfg)
    with open_dict(job):
        del job["hydra"]
        if "output_dir" in job:
            job.output_dir = "<run dir>"  # ${hydra:runtime.output_dir}: Hydra sets it when it makes the dir
    if "logger" in job:
        require_login(logger_spec(job))
    if OmegaConf.select(job, "hub.push") and not OmegaConf.select(job, "hub.dry_run"):
        check_push(multirun=multirun)
    if not multirun:  # a sweep's swept keys are applied per job; each job checks its own
        check_root(parse_config(job, extra_keys=extra_keys).data)  # before torch, the data and W&B start


def check_push(*, multirun: bool) -> None:
    """hub.push=true: refused now, not after training, without a token or with the Hub off; and in a
    sweep, whose every job would push over the one repo."""
    if multirun:
        raise ConfigError(
            "hub.push=true with -m would push every job over one repo: sweep without it, then push the job "
            "you choose with peft-food-push <job dir> <user>/<repo>"
        )
    from peft_food.saved.hub import TRAIN_LATER, require_online, require_token  # huggingface_hub, only when pushing

    require_token()
    require_online(later=TRAIN_LATER)


def logger_spec(job: DictConfig) -> LoggerSpec:
    return LoggerSpec(**OmegaConf.to_container(job.logger, resolve=True))


def check_dir_names(cfg: DictConfig, *, multirun: bool) -> None:
    """A run dir (or its log file, `<hydra.job.name>.log`) named past the filesystem's limit fails in
    Hydra's mkdir with a traceback, after composing: one line here instead."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        where = str(OmegaConf.select(cfg, key))
        log_name = f"{OmegaConf.select(cfg, 'hydra.job.name')}.log"
    except Exception:  # an interpolation only Hydra's own run can resolve (${hydra:...}): Hydra judges it
        return
    path = os.path.abspath(where)
    limit = _name_max(path)
    for part, named in [*((p, key) for p in path.split(os.sep)), (log_name, "hydra.job.name")]:
        if len(part.encode()) > limit:
            raise ConfigError(
                f"{named}: the name {part[:40]!r}... is {len(part.encode())} bytes, over the "
                f"filesystem's limit of {limit} for one file or folder name: give a shorter {named}"
            )
    if len(path.encode()) + 1 + len(log_name.encode()) > _path_max(path):
        raise ConfigError(
            f"{key}: the path {path[:40]!r}... is {len(path.encode())} bytes, over the "
            f"filesystem's limit of {_path_max(path)}: give a shorter {key}"
        )


def _existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _name_max(path: str) -> int:
    try:
        return os.pathconf(_existing(path), "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _path_max(path: str) -> int:
    try:
        return os.pathconf(_existing(path), "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def check_launcher(cfg: DictConfig) -> None:
    """The SLURM launcher needs SLURM: off a cluster, submitit fails only at launch, in 25 lines."""
    target = str(cfg.hydra.launcher.get("_target_", ""))
    if target.endswith("SlurmLauncher") and shutil.which("srun") is None:
        raise ConfigError(
            f"hydra/launcher={cfg.hydra.runtime.choices['hydra/launcher']} submits to SLURM, "
            "but there is no srun here: run it on the cluster's login node, or use "
            "hydra/launcher=local (each job in a process here) or drop it (jobs one after another)"
        )


def preflight(argv: list[str], *, config_name: str, prog: str, extra_keys: tuple[str, ...] = ()) -> bool:
    """Compose and check this command line; raise ConfigError (one line) on any mistake. Returns
    whether it runs something (not --cfg, --info, -sc, --hydra-help)."""
    composed = compose(argv, config_name=config_name)
    if composed is not None:
        check_run(composed[0], multirun=composed[1], prog=prog, extra_keys=extra_keys)
    return composed is not None


def console_script(
    main: Callable[[], Any], *, command: Command, config_name: str, extra_keys: tuple[str, ...] = ()
) -> None:
    """A Hydra command's console script: our own --help (fast, no Hydra internals), then the command
    line checked (one line, exit 2, before any run dir), the Hub probed once, then Hydra's `main`."""
    if answered_help(command):
        return

    @one_line_errors(command.prog)
    def checked() -> int:
        if preflight(sys.argv[1:], config_name=config_name, prog=command.prog, extra_keys=extra_keys):
            offline_unless_reachable()  # no Hub: fail (or use the cache) at once, not after retries
        return 0

    try:
        if status := checked():
            sys.exit(status)
        main()
    except KeyboardInterrupt:
        # Ctrl-C before a run installs its own handling (imports, composing, loading) or after it: one
        # line, as a run stopped by a signal says it. A training run's launch dir holding nothing yet
        # is removed by the next launch (training/claim.py sweep_dead_starts).
        print(f"{command.prog}: interrupted (Ctrl-C) before anything was saved", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)

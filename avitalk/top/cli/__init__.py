"""The ``avitalk`` command. Every subcommand has ``--help``; errors print one line and exit non-zero."""

from __future__ import annotations

import logging
import sys

import typer

from avitalk.errors import AvitalkError
from avitalk.top.cli import run, live, files, evaluate, train, data  # noqa: F401, I001 - each registers its commands, in this order
from avitalk.top.cli.common import app

def _print_version(value: bool) -> None:
    if value:
        from avitalk import __version__

        typer.echo(f"avitalk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print avitalk's version and exit.")) -> None:
    """Speech in, expressive 3D talking face out, through an editable audio-visual instruction."""



def _quiet_libraries() -> None:
    """Library chatter that is not ours: transformers' weight-loading bars and a deprecation warning peft triggers."""
    import warnings

    import os

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported (if ever)


# old option names, still accepted (not shown in --help): one name per idea across commands now
OLD_NAMES = {"--output": "--out", "-k": "-n"}


def _new_names(argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        out.append(OLD_NAMES[name] + eq + value if name in OLD_NAMES else a)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    argv = _new_names(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = app(args=argv, prog_name="avitalk", standalone_mode=False)
    except AvitalkError as e:
        typer.echo("error: " + " ".join(str(e).split()), err=True)
        return 2
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as e:  # usage errors: click's, or the copy of click that typer bundles
        import click

        mods = [click.exceptions] + [m.exceptions for m in (getattr(typer, "_click", None),) if m is not None]
        if any(isinstance(e, m.ClickException) for m in mods):
            if type(e).__name__ == "NoArgsIsHelpError":  # `avitalk` (or `avitalk data`) alone: its help, no error
                text = e.format_message()
                if text.strip():  # (the rich formatter has printed it already; the plain one hands it over)
                    typer.echo(text)
                return 0
            typer.echo("error: " + " ".join(e.format_message().split()), err=True)
            return 2 if any(isinstance(e, m.UsageError) for m in mods) else int(e.exit_code or 1)
        if any(isinstance(e, getattr(m, "Abort", ())) for m in mods):
            return 1
        if isinstance(e, OSError):  # the file system said no (disk full, permissions...): one line, not a traceback
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            return 1
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())

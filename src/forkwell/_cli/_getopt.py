"""GNU-style option splitting for the commands that run another command.

``forkwell timeout`` and ``forkwell init`` take options only up to the first
operand, as GNU getopt's ``+`` mode does, so everything after belongs to the
command untouched (``forkwell init -v -- sh -c x -v``).  Short options bundle
(``-pv``, ``-k5``), long ones take ``--name=value`` or ``--name value`` and may
be abbreviated while unambiguous.  Not argparse: it cannot stop at the first
operand, and it costs start-up time; not ``getopt``: it imports gettext.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A command line that cannot be parsed; the message is one line, GNU-worded."""


def split_options(
    argv: list[str], *, flags: dict[str, str], valued: dict[str, str]
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split ``argv`` into ``[(key, value)]`` options, in order, and the operands.

    ``flags`` and ``valued`` map every spelling (``"-v"``, ``"--verbose"``) to
    the key reported for it; flags report ``None`` as their value.
    """
    longs = [name for name in (*flags, *valued) if name.startswith("--")]
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in flags and name not in valued:
                matches = [n for n in longs if n.startswith(name)]
                if len(matches) != 1:
                    kind = "ambiguous" if matches else "unrecognized"
                    raise UsageError(f"{kind} option {name!r}")
                name = matches[0]
            if name in flags:
                if eq:
                    raise UsageError(f"option {name!r} doesn't allow an argument")
                out.append((flags[name], None))
            else:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"option {name!r} requires an argument")
                    value = argv[i]
                out.append((valued[name], value))
            i += 1
            continue
        if arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                short = "-" + arg[j]
                if short in flags:
                    out.append((flags[short], None))
                    j += 1
                    continue
                if short in valued:
                    value = arg[j + 1 :]
                    if not value:
                        i += 1
                        if i >= len(argv):
                            raise UsageError(f"option requires an argument -- {arg[j]!r}")
                        value = argv[i]
                    out.append((valued[short], value))
                    break
                raise UsageError(f"invalid option -- {arg[j]!r}")
            i += 1
            continue
        break
    return out, argv[i:]

"""
The `--key=value` layer every command shares (train.py, prepare.py, sample.py, sweep.py, the benches...).

A command declares its options one way: a dict OPTIONS with a comment beside each entry (the comment is
what --help prints), and where a value has limits, an Option that says them next to it:

    OPTIONS = {
        'out_dir': 'out',                          # the run's folder
        'batch_size': Option(12, at_least(1)),     # windows per micro-batch
    }
    python train.py config/x.py --batch_size=32 --compile=False

Arguments are applied left to right: a bare path is a config file (python assignments, executed
with the current values in scope), `--key=value` overrides one key. Compared with nanoGPT's
configurator this fixes what users trip on: an int is fine for a float key, a key whose default is
None can be set, a value may contain '=', booleans accept True/False/true/false/1/0/yes/no.
Any mistake, a value outside its limits included, is one clear line on stderr naming the key and exit
code 2, before anything is written. A script may keep old option names working:
`renamed={'old': (old default, 'new', convert)}` sets new = convert(old value, config so far) with a
one-line note on stderr.
"""
import ast
import difflib
import re
import sys
from typing import Callable, NamedTuple

from common import fail

BOOLS = {'true': True, '1': True, 'yes': True, 'false': False, '0': False, 'no': False}


class ConfigError(ValueError):
    pass


class Option(NamedTuple):
    """An option's default and its limits: check(value) says what is wrong with a value, or None."""
    default: object
    check: Callable = None


def at_least(low):
    return lambda v: None if v >= low else (f'must be at least {low}' if low else 'must be 0 or more')


def positive(v):
    return None if v > 0 else 'must be positive'


def fraction(v):
    return None if 0 <= v < 1 else 'must be in [0, 1)'


def inside(low, high):
    return lambda v: None if low < v < high else f'must be between {low} and {high}'


def between(low, high):
    return lambda v: None if low <= v <= high else f'must be in [{low}, {high}]'


def one_of(*choices):
    return lambda v: None if v in choices else f"expected one of {', '.join(map(str, choices))}"


def check_limits(declared, config):
    """ConfigError for the first value outside its Option's limits."""
    for key, option in declared.items():
        problem = isinstance(option, Option) and option.check and option.check(config[key])
        if problem:
            raise ConfigError(f'--{key}={config[key]!r}: {problem}')


def _closest(key, keys):
    match = difflib.get_close_matches(key, keys, n=1)
    return f" (did you mean '{match[0]}'?)" if match else ''


def _unknown(key, keys, where):
    return ConfigError(f"unknown key '{key}'{where}{_closest(key, keys)}; valid keys: {', '.join(sorted(keys))}")


def coerce(key, raw, default):
    """Turn the command-line string `raw` into the type of `default`, or raise ConfigError."""
    if isinstance(default, bool):
        if raw.strip().lower() in BOOLS:
            return BOOLS[raw.strip().lower()]
        raise ConfigError(f"--{key}={raw}: expected a boolean (True/False/true/false/1/0)")
    if isinstance(default, (int, float)):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = None
        value = widen_int(value, default)
        if type(value) is not type(default):
            raise ConfigError(f"--{key}={raw}: expected {type(default).__name__} (default is {default!r})")
        return value
    if isinstance(default, str):
        return raw
    if default is None:  # no type to go by: a python literal if it parses, else the string itself
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    raise ConfigError(f"--{key}: cannot set a key of type {type(default).__name__} from the command line")


def widen_int(value, default):
    """An int given for a float key is that float (bools are not ints here)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_type(key, value, default, where):
    """Values assigned in a config file must keep the key's type (int for float is fine)."""
    value = widen_int(value, default)
    if default is None or value is None or isinstance(value, type(default)):
        return value
    raise ConfigError(f"{key} = {value!r}{where}: expected {type(default).__name__} (default is {default!r})")


def rename(key, value, config, renamed, given):
    """Apply the renamed option `key`: its value goes to the new key, with a note saying so."""
    _, new, convert = renamed[key]
    config[new] = convert(value, config)
    given.add(new)
    print(f'note: {key} is deprecated: use {new} (here {new}={config[new]!r})', file=sys.stderr)


def apply_config_file(path, config, defaults, renamed, given):
    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file '{path}': {e.strerror}")
    scope = dict(config)
    try:
        exec(compile(source, path, 'exec'), {}, scope)
    except Exception as e:
        raise ConfigError(f"config file '{path}' failed: {type(e).__name__}: {e}")
    for key, value in scope.items():
        if key.startswith('_') or key in config and config[key] is value:
            continue
        if key in renamed:
            rename(key, check_type(key, value, renamed[key][0], f" in '{path}'"), config, renamed, given)
            continue
        if key not in defaults:
            raise _unknown(key, list(defaults), f" in config file '{path}'")
        config[key] = check_type(key, value, defaults[key], f" in '{path}'")
        given.add(key)


def parse_args(defaults, argv, renamed=None, given=None):
    config, renamed, given = dict(defaults), renamed or {}, set() if given is None else given
    for arg in argv:
        if not arg.startswith('--'):
            apply_config_file(arg, config, defaults, renamed, given)
            continue
        key, eq, raw = arg[2:].partition('=')
        if key not in defaults and key not in renamed:
            raise _unknown(key, list(defaults), '')
        if not eq:
            raise ConfigError(f"--{key} needs a value: write --{key}=VALUE")
        if key in renamed:
            rename(key, coerce(key, raw, renamed[key][0]), config, renamed, given)
        else:
            config[key] = coerce(key, raw, defaults[key])
            given.add(key)
    return config


def configure(declared, argv=None, renamed=None, given=None, sources=()):
    """Parse sys.argv (or argv) against the `declared` options ({key: default or Option}; and `renamed`, see
    above): {key: value}, each within its limits; on any mistake print one line and exit 2. `given`, a set, receives
    the keys that argv set (on the command line or in a file). --help prints every option, its default and its
    comment in the script (and in `sources`, more files)."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = {k: v.default if isinstance(v, Option) else v for k, v in declared.items()}
    if any(a in ('-h', '--help') for a in argv):
        main = getattr(sys.modules.get('__main__'), '__file__', None)
        comments = {k: v for path in (main, *sources) if path for k, v in option_comments(path).items()}
        lines = ['options (--key=value), their defaults and what they do:']
        for key, value in defaults.items():
            setting = f'  --{key}={value!r}'
            lines.append(f'{setting:<40} {comments[key]}' if key in comments else setting)
        try:
            print('\n'.join(lines))
        except BrokenPipeError:  # `--help | head`
            pass
        sys.exit(0)
    try:
        config = parse_args(defaults, argv, renamed, given)
        check_limits(declared, config)
    except ConfigError as e:
        fail(e, 2)
    return config


def option_comments(path):
    """{key: comment} of the options a file defines with a comment beside them: `key = value  # comment` (module
    values, dataclass fields) or `'key': value,  # comment` (a dict of defaults), and the comment lines that follow
    one, indented deeper than its key."""
    found, key, indent = {}, None, 0
    with open(path, encoding='utf-8') as f:
        for line in f:
            more = re.match(r'^(\s+)#\s?(.*)$', line)
            if key and more and len(more.group(1)) > indent:
                found[key] += ' ' + more.group(2).strip()
                continue
            option = re.match(r"""^(\s*)'?(\w+)'?\s*(?::\s*[\w\[\]\.]+\s*=|=|:)\s*[^#]*?#\s*(.*)$""", line)
            key = option.group(2) if option else None
            if option:
                indent, found[key] = len(option.group(1)), option.group(3).strip()
    return found


def options_of(scope):
    """A script's declared options: its globals that are Options or plain values, not starting with '_' and not
    CONSTANTS."""
    return {
        k: v
        for k, v in scope.items()
        if not k.startswith('_') and not k.isupper() and isinstance(v, (Option, int, float, bool, str, type(None)))
    }

"""
Settings for train.py, the nanoGPT way (nanoGPT's configurator.py, with checks): the defaults are a
table in the script, (name, default, what it does); then config files, Python files of `key = value`
lines exec'd in order (config/PRESET.py); then --key=value flags (or --key value). The help text sits
next to each default, so `--help` says what every setting does, its default and allowed values.

A typo must not silently train with the default: an unknown name is an error that names the closest
known one, a value of the wrong type or outside its allowed values is a one-line error.
"""

import argparse
import ast
import difflib
import os


def get_config(argv, settings, choices, description, die):
    """A dict of every setting. settings: [(name, default, help)]; choices: {name: allowed values};
    die(message): stop with a one-line error."""
    config, helps = {k: v for k, v, _ in settings}, {k: h for k, _, h in settings}

    def unknown(key, where):
        close = difflib.get_close_matches(key, config, n=1)
        die(f"{where}unknown setting {key!r}" + (f"; did you mean {close[0]!r}?" if close else "; --help lists them"))

    def boolean(text):
        if text.lower() not in ('1', 'true', 'yes', '0', 'false', 'no'):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ('1', 'true', 'yes')

    def literal(text):  # for None defaults, dicts and lists: a Python literal, else the text
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     usage='%(prog)s [config/PRESET.py ...] [--key=value ...]')
    parser.add_argument('config_files', nargs='*', help='config/PRESET.py files, applied in order before the flags')
    for key, default in config.items():
        kind = boolean if type(default) is bool else literal if default is None or type(default) in (dict, list) \
            else type(default)
        allowed = f"; one of {', '.join(choices[key])}" if key in choices else ''
        parser.add_argument(f'--{key}', type=kind, default=argparse.SUPPRESS, metavar='VALUE' if default is None else type(default).__name__.upper(),
                            help=f"{helps[key]} (default: {default!r}{allowed})")
    flags, extra = parser.parse_known_intermixed_args(argv)
    if extra:
        unknown(extra[0].lstrip('-').split('=')[0], 'flag: ')
    flags = vars(flags)
    for path in flags.pop('config_files'):
        if not path.endswith('.py') or not os.path.isfile(path):
            die(f"{path}: expected a config file (config/PRESET.py) or a --key=value flag")
        values = {}
        exec(compile(open(path).read(), path, 'exec'), values)
        for key, value in values.items():
            if key.startswith('_') or callable(value) or type(value).__name__ == 'module':
                continue
            if key not in config:
                unknown(key, f"{path}: ")
            default = config[key]
            if type(value) is not type(default) and default is not None and \
                    (type(default), type(value)) not in ((float, int), (list, tuple)):
                die(f"{path}: {key} = {value!r} is a {type(value).__name__}, expected {type(default).__name__}")
            config[key] = float(value) if type(default) is float else value
    config.update(flags)
    for key, allowed in choices.items():
        if config[key] not in allowed:
            die(f"--{key}={config[key]}: expected one of {', '.join(allowed)}")
    return config

# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Hub model-card templates for checkpoints converted to this package's format (`templates/`, shipped in the package).

Each template is a markdown file in this folder, `<name>.md`, that starts with YAML front matter (Hub metadata) and
holds `{{field}}` placeholders. `render(name, **fields)` fills them:

```python
from supmae.reports.card_templates import render

text = render("supmae-pretrain", repo_id="me/supmae-vit-base-patch16", base_model="", ...)
```

- Every placeholder must be given a value, and every value must be used: a missing field or a field the template
  does not know (a typo) raises `KeyError` naming it. `placeholders(name)` lists a template's fields.
- Placeholders in the front matter sit inside double quotes; their values are escaped for a YAML double-quoted
  string, so any text (quotes, colons, newlines) keeps the metadata valid. A front-matter line whose placeholder is
  given an empty string is left out, so `base_model=""` omits `base_model` from the metadata.
- Placeholders in the body are replaced with the text as given.
"""

import json
import re
from importlib.resources import files


TEMPLATES: tuple[str, ...] = ("supmae-pretrain", "supmae-finetuned", "mae-converted")

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_FRONT_MATTER = re.compile(r"\A(---\n)(.*?\n)(---\n)", re.DOTALL)


def template_text(template: str) -> str:
    """The raw text of a template, placeholders unfilled."""
    if template not in TEMPLATES:
        raise ValueError(f"Unknown model-card template {template!r}; the templates are {', '.join(TEMPLATES)}.")
    return files(__package__).joinpath("templates", f"{template}.md").read_text(encoding="utf-8")


def placeholders(template: str) -> frozenset[str]:
    """The names of the fields a template needs."""
    return frozenset(_PLACEHOLDER.findall(template_text(template)))


def _yaml_quoted(value: str) -> str:
    """`value` escaped for the inside of a YAML double-quoted scalar (JSON's escapes are valid YAML ones)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def render(template: str, **fields) -> str:
    """The model card `template` (one of `TEMPLATES`) with every `{{name}}` replaced by `fields[name]`.

    Raises `KeyError` naming the placeholders left unfilled and the fields the template does not use."""
    text = template_text(template)
    used = set(_PLACEHOLDER.findall(text))
    missing, unknown = sorted(used - fields.keys()), sorted(fields.keys() - used)
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing field(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown field(s) {', '.join(unknown)}")
        raise KeyError(
            f"Model-card template {template!r}: {'; '.join(problems)}. It takes exactly: {', '.join(sorted(used))}."
        )
    for name, value in fields.items():
        if not isinstance(value, str):
            raise TypeError(f"Model-card field {name!r} must be a string, not {type(value).__name__}.")

    match = _FRONT_MATTER.match(text)
    if match is None:  # every template starts with front matter; guard against an edited one
        raise ValueError(f"Model-card template {template!r} does not start with YAML front matter.")
    front_matter, body = match.group(2), text[match.end() :]

    lines = []
    for line in front_matter.splitlines(keepends=True):
        names = _PLACEHOLDER.findall(line)
        if names and all(fields[name] == "" for name in names):
            continue  # an empty value leaves the key out of the metadata
        lines.append(_PLACEHOLDER.sub(lambda m: _yaml_quoted(fields[m.group(1)]), line))
    body = _PLACEHOLDER.sub(lambda m: fields[m.group(1)], body)
    return match.group(1) + "".join(lines) + match.group(3) + body

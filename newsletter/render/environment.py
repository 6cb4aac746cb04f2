"""The Jinja2 environment over templates/, and MJML compilation; errors name the template."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2
from mjml import mjml2html

import newsletter
from newsletter.errors import TemplateError

_AUTOESCAPED = (".mjml.j2", ".html.j2")


class TemplateRenderError(TemplateError):
    """A template (Jinja2 or MJML) failed; `template` names the file under templates/."""

    def __init__(self, template: str, problem: str) -> None:
        self.template = template
        self.problem = problem
        super().__init__(f"template {template}: {problem}")


def default_templates_dir() -> Path:
    """templates/ of the checkout when running from one, else the copy installed in the package."""
    package = Path(newsletter.__file__).parent
    checkout = package.parent / "templates"
    if (checkout / "digest.mjml.j2").is_file():
        return checkout
    return package / "_templates"


def _autoescape(name: str | None) -> bool:
    # HTML and MJML are escaped; the text part and the subject are not HTML, so escaping would
    # show "&amp;" to the reader.
    return name is not None and name.endswith(_AUTOESCAPED)


def make_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    root = templates_dir or default_templates_dir()
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Templates do not change under a running process; checking their mtime on every
        # render was a tenth of a send's time.
        auto_reload=False,
    )


def templates_root(env: jinja2.Environment) -> Path | None:
    loader = env.loader
    if isinstance(loader, jinja2.FileSystemLoader) and loader.searchpath:
        return Path(loader.searchpath[0])
    return None


def render_template(env: jinja2.Environment, name: str, context: Mapping[str, object]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(exc.name or name, f"line {exc.lineno}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateRenderError(name, f"{exc.name} not found in the templates folder") from exc
    except jinja2.TemplateError as exc:
        raise TemplateRenderError(name, str(exc)) from exc


class _IncludeLoader:
    """Reads `<mj-include path="...">` files from templates/, and nothing outside it."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root else None

    def __call__(self, path: str) -> str:
        if self.root is None:
            raise FileNotFoundError(path)
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise FileNotFoundError(path)
        return target.read_text(encoding="utf-8")


def _near(source: str, problem: str) -> str:
    """A short excerpt of the generated MJML at the position MRML reports, if it reports one."""
    marker = "at position "
    if marker not in problem:
        return ""
    start = problem.rsplit(marker, 1)[1].split(":", 1)[0]
    if not start.isdigit():
        return ""
    at = int(start)
    return f" near {source[max(0, at - 40) : at + 40]!r}"


def compress(mjml: str) -> str:
    """Drop template indentation and blank lines: bytes the reader never sees but Gmail counts."""
    return "\n".join(line.strip() for line in mjml.splitlines() if line.strip())


def compile_mjml(mjml: str, *, template: str, env: jinja2.Environment) -> str:
    try:
        return mjml2html(
            mjml,
            disable_comments=True,
            # No web fonts: MRML otherwise links Google Fonts, and opening a mail must tell nobody.
            fonts={},
            include_loader=_IncludeLoader(templates_root(env)),
        )
    except ValueError as exc:
        raise TemplateRenderError(template, f"MJML: {exc}{_near(mjml, str(exc))}") from exc

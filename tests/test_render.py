"""Rendering: digests (HTML, text, subject), personalisation, size guard, cache, web version."""

from __future__ import annotations

import html
import re
import shutil
import threading
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.content.issue_yaml import load_issue
from newsletter.content.model import Contact, Issue, Item, Organiser
from newsletter.errors import TemplateError
from newsletter.render import (
    GREETING,
    HTML_LIMIT,
    PLACEHOLDERS,
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    DigestLinks,
    ProfileCache,
    Recipient,
    RenderedDigest,
    UnknownLanguageError,
    default_templates_dir,
    make_environment,
    markdown,
    personalise,
    render_digest,
    render_issue_page,
)
from newsletter.tailor import Audience, Selection, select_items
from newsletter.taxonomy import SectorDef, parse_sectors

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "newsletter" / "content" / "samples" / "2020-01.yaml"
TAXONOMY = ROOT / "subscribers" / "sectors.yaml"
BASE = "https://newsletter.example.org"
LINKS = DigestLinks(BASE)
ARCHIVE = f"{BASE}/archive/2020-01"

SECTORS = {
    s.code: s
    for s in (
        SectorDef("integrated-circuits", "集成电路", "Integrated circuits"),
        SectorDef("ai", "人工智能", "AI"),
        SectorDef("biomedicine", "生物医药", "Biomedicine"),
        SectorDef("software", "软件", "Software"),
        SectorDef("robotics", "机器人", "Robotics"),
    )
}


def make_issue(**overrides: object) -> Issue:
    items = (
        Item(
            id="ic-policy",
            section="policy",
            title="国务院《集成电路产业若干政策》",
            body="2020年7月，国务院印发**若干政策**。\n\n具体措施包括：\n1. 财税支持\n2. 投融资",
            source="http://www.gov.cn/zhengce/content/2020-08/04/content_5532370.htm",
            sectors=("integrated-circuits", "software"),
        ),
        Item(id="general-note", section="policy", title="一般通知 & 说明", body="没有领域的通知。"),
        Item(
            id="lung-cancer",
            section="research",
            title="肺腺癌研究取得重要进展",
            body="BIOBODY 蛋白质组学研究。",
            sectors=("biomedicine",),
        ),
        Item(
            id="weride",
            section="parks",
            title="文远知行获远程测试许可",
            body="自动驾驶<script>alert(1)</script>路测。",
            source="https://www.stdaily.com/a?b=1&c=2",
            sectors=("ai",),
        ),
        Item(
            id="yunqi",
            section="focus",
            title="云栖小镇的成长之路",
            summary="从工业园到云计算引领者。",
            body="云计算已经成为数字经济的基础。\n\n## 1. 超前洞见力\n\n2012年左右，园区填补空白。",
            sectors=("software",),
            always=True,
        ),
    )
    fields: dict[str, object] = {
        "publication": "中国科技创新速递",
        "title_en": "China S&T Innovation Express",
        "year": 2020,
        "number": 1,
        "items": items,
        "organisers": (Organiser("主办单位", "科技部国际合作司"),),
        "contact": Contact(phone="010-68515508", email="irs@cstec.org.cn"),
        "disclaimer": "免责声明：本刊只对信息内容进行梳理、排版、编辑。",
    }
    fields.update(overrides)
    return Issue(**fields)  # type: ignore[arg-type]


class Page(HTMLParser):
    """Tags, ids, links and visible text of an HTML document."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if found.get("href") is not None:
            self.hrefs.append(str(found["href"]))
        if found.get("src") is not None:
            self.srcs.append(str(found["src"]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def visible(self) -> str:
        return "".join(self.text)


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    return make_environment()


def render(
    issue: Issue, selection: Selection, language: str = "zh", env: jinja2.Environment | None = None
) -> RenderedDigest:
    return render_digest(
        issue,
        selection,
        language=language,
        sectors=SECTORS,
        links=LINKS,
        env=env or make_environment(),
    )


def tailored(language: str = "zh") -> RenderedDigest:
    issue = make_issue()
    return render(
        issue,
        select_items(issue, Audience(sectors=frozenset({"ai", "integrated-circuits"}))),
        language,
    )


@pytest.fixture(scope="module")
def digest() -> RenderedDigest:
    return tailored()


RECIPIENT = Recipient("张三", f"{BASE}/u/tok?x=1&y=2", f"{BASE}/p/tok")


# --- content and tailoring --------------------------------------------------------------------


def test_html_has_included_titles_and_not_excluded_bodies(digest: RenderedDigest) -> None:
    page = Page(digest.html)
    for title in (
        "国务院《集成电路产业若干政策》",
        "一般通知 & 说明",
        "文远知行获远程测试许可",
        "云栖小镇的成长之路",
    ):
        assert title in page.visible
    assert "BIOBODY" not in digest.html
    assert "BIOBODY" not in digest.text
    assert {"ic-policy", "general-note", "weride", "yunqi"} <= page.ids


def test_excluded_titles_are_listed_with_archive_anchors(digest: RenderedDigest) -> None:
    page = Page(digest.html)
    assert "本期其他内容" in page.visible
    assert "肺腺癌研究取得重要进展" in page.visible
    assert f"{ARCHIVE}#lung-cancer" in page.hrefs
    assert f"{ARCHIVE}#lung-cancer" in digest.text


def test_whole_issue_has_no_also_block_and_no_sector_suffix() -> None:
    issue = make_issue()
    whole = render(issue, select_items(issue, Audience()))
    assert "本期其他内容" not in whole.html
    assert "本期其他内容" not in whole.text
    assert "BIOBODY" in whole.html
    assert whole.subject == "中国科技创新速递 2020年第1期"


def test_empty_sections_are_left_out(digest: RenderedDigest) -> None:
    # Research holds only the excluded item; demand holds nothing at all.
    for heading in ("科研 Research", "需求 Demand"):
        assert heading not in digest.html
        assert heading not in digest.text
    assert "政策 Policy" in digest.html
    assert "动态 NEWS" in digest.html


def test_content_is_escaped_and_markdown_rendered(digest: RenderedDigest) -> None:
    assert "<script>" not in digest.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in digest.html
    assert "<strong>若干政策</strong>" in digest.html
    assert "<ol><li>财税支持</li><li>投融资</li></ol>" in digest.html
    assert "<h4>1. 超前洞见力</h4>" in digest.html
    assert "一般通知 &amp; 说明" in digest.html


def test_source_links_and_item_anchors(digest: RenderedDigest) -> None:
    page = Page(digest.html)
    assert "https://www.stdaily.com/a?b=1&c=2" in page.hrefs
    assert "#weride" in page.hrefs  # table of contents
    assert "https://www.stdaily.com/a?b=1&c=2" in digest.text


def test_masthead_contact_disclaimer_and_preheader(digest: RenderedDigest) -> None:
    visible = Page(digest.html).visible
    assert "中国科技创新速递" in visible
    assert "China S&T Innovation Express" in visible
    assert "2020年第1期" in visible
    assert "010-68515508" in visible
    assert "免责声明：本刊只对信息内容" in visible
    assert "免责声明：免责声明" not in visible
    assert digest.preheader.startswith("云栖小镇的成长之路")  # the focus piece leads
    assert digest.preheader in visible


def test_language_changes_only_the_chrome() -> None:
    en = tailored("en")
    visible = Page(en.html).visible
    assert "Also in this issue" in visible
    assert "Unsubscribe" in visible
    assert "Policy 政策" in visible
    assert "云计算已经成为数字经济的基础。" in visible
    assert "本期其他内容" not in visible


def test_unknown_language_is_refused() -> None:
    issue = make_issue()
    with pytest.raises(UnknownLanguageError, match="fr"):
        render(issue, select_items(issue, Audience()), "fr")


# --- subject ------------------------------------------------------------------------------------


def test_subject_names_issue_and_matched_sectors() -> None:
    assert tailored("zh").subject == "中国科技创新速递 2020年第1期｜集成电路、人工智能"
    assert (
        tailored("en").subject
        == "China S&T Innovation Express 2020 No. 1 | Integrated circuits, AI"
    )


def test_subject_caps_sector_names_and_stays_one_line() -> None:
    items = tuple(
        Item(id=f"i{n}", section="research", title=f"T{n}", body="x", sectors=(code,))
        for n, code in enumerate(SECTORS)
    )
    issue = make_issue(items=items, publication="中国科技创新速递\n第二行")
    interests = frozenset(list(SECTORS)[:4])
    selection = select_items(issue, Audience(sectors=interests))
    zh, en = render(issue, selection, "zh"), render(issue, selection, "en")
    assert zh.subject == "中国科技创新速递 第二行 2020年第1期｜集成电路、人工智能、生物医药等"
    assert en.subject.endswith("| Integrated circuits, AI, Biomedicine and more")
    assert not re.search(r"[\x00-\x1f\x7f]", zh.subject + en.subject)


# --- text part ----------------------------------------------------------------------------------


def test_text_part_is_written_for_reading(digest: RenderedDigest) -> None:
    text = digest.text
    assert not re.search(r"<(p|div|a|h\d|ul|ol|li|br|table|strong)\b", text)  # not HTML
    assert "1. 国务院《集成电路产业若干政策》" in text
    assert "来源：http://www.gov.cn/zhengce/content/2020-08/04/content_5532370.htm" in text
    assert "2020年7月，国务院印发若干政策。" in text  # bold markers dropped
    assert "【1. 超前洞见力】" in text
    # The signed links are longer than a line once spliced in: each on a line of its own.
    assert f"退订：\r\n{UNSUBSCRIBE_URL}\r\n" in text
    assert f"修改关注领域：\r\n{PREFERENCES_URL}\r\n" in text
    assert f"网页版：{ARCHIVE}" in text
    assert "\r\n\r\n\r\n" not in text
    assert "\n" not in text.replace("\r\n", "")  # CRLF, as on the wire
    assert "&amp;" not in text


# --- privacy, size, layout ----------------------------------------------------------------------

_OWN_LINK = re.compile(r"^(#|mailto:|%%|" + re.escape(BASE) + r"/)")


def assert_tells_nobody(markup: str, issue: Issue | None = None) -> None:
    """No resource is fetched on opening; links go to us, or to an item's own source, unchanged."""
    lowered = markup.lower()
    for needle in ("<link", "@import", "fonts.googleapis", "<img", "<script", "url(", "<iframe"):
        assert needle not in lowered, needle
    page = Page(markup)
    assert page.srcs == []
    sources = {item.source for item in (issue or make_issue()).items if item.source}
    for href in page.hrefs:
        assert _OWN_LINK.match(href) or href in sources, href


def test_no_external_resources_or_tracking(digest: RenderedDigest) -> None:
    assert_tells_nobody(digest.html)
    assert_tells_nobody(personalise(digest, RECIPIENT).html)


def test_layout_fits_small_screens(digest: RenderedDigest) -> None:
    widths = [int(w) for w in re.findall(r"(?<![-\w])width:\s*(\d+)px", digest.html)]
    widths += [int(w) for w in re.findall(r'\swidth="(\d+)"', digest.html)]
    assert widths and max(widths) <= 600
    assert 'name="viewport"' in digest.html
    assert "max-width:480px" in digest.html  # narrower padding on phones
    assert "font-size:16px" in digest.html
    assert "PingFang SC" in digest.html and "Microsoft YaHei" in digest.html


def _sample() -> tuple[Issue, dict[str, SectorDef]]:
    if not SAMPLE.exists() or not TAXONOMY.exists():
        pytest.skip("sample issue or taxonomy not present")
    sectors = {s.code: s for s in parse_sectors(TAXONOMY.read_text(encoding="utf-8"))}
    issue = load_issue(SAMPLE.read_text(encoding="utf-8"), sector_codes=set(sectors))
    return issue, sectors


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("interests", [(), ("integrated-circuits", "ai"), ("biomedicine",)])
def test_sample_issue_fits_under_the_clipping_limit(
    env: jinja2.Environment, language: str, interests: tuple[str, ...]
) -> None:
    issue, sectors = _sample()
    selection = select_items(issue, Audience(sectors=frozenset(interests)))
    digest = render_digest(
        issue, selection, language=language, sectors=sectors, links=LINKS, env=env
    )
    assert len(digest.html.encode()) < HTML_LIMIT
    assert digest.cut_items == ()  # the real issue fits without cutting anything
    page = Page(digest.html)
    assert set(selection.included) <= page.ids
    web = ARCHIVE if language == "zh" else f"{ARCHIVE}?lang=en"  # English readers' web page
    assert {f"{web}#{item_id}" for item_id in selection.excluded} <= set(page.hrefs)
    assert_tells_nobody(digest.html, issue)


def test_oversized_issue_is_cut_at_paragraphs_with_read_more_links(env: jinja2.Environment) -> None:
    paragraph = "云栖小镇持续引进和建设科研资源，全力提升园区的创新能力。" * 40  # ~3.4 KB
    items = tuple(
        Item(
            id=f"long-{n}",
            section="focus" if n == 0 else "research",
            title=f"长文 {n}",
            body="\n\n".join(f"第{n}篇第{p}段。{paragraph}" for p in range(8)),
        )
        for n in range(6)
    )
    issue = make_issue(items=items)
    digest = render_digest(
        issue, select_items(issue, Audience()), language="zh", sectors=SECTORS, links=LINKS, env=env
    )
    assert len(digest.html.encode()) <= HTML_LIMIT
    assert digest.cut_items
    page = Page(digest.html)
    for item_id in digest.cut_items:
        assert f"{ARCHIVE}#{item_id}" in page.hrefs
        assert f"阅读全文：{ARCHIVE}#{item_id}" in digest.text
    for n in range(6):
        assert f"第{n}篇第0段" in digest.html  # every item keeps at least its first paragraph
        whole = f"long-{n}" not in digest.cut_items
        assert (f"第{n}篇第7段" in digest.html) is whole
        assert (f"{ARCHIVE}#long-{n}" in page.hrefs) is not whole


def test_cut_keeps_whole_paragraphs_and_no_dangling_heading() -> None:
    body = "甲" * 100 + "\n\n## 小标题\n\n" + "乙" * 100
    assert markdown.cut(body, 320) == "甲" * 100
    assert markdown.cut(body, 10) == "甲" * 100
    assert markdown.cut(body, 10_000) == body


# --- personalisation ----------------------------------------------------------------------------


def test_personalise_fills_every_placeholder(digest: RenderedDigest) -> None:
    done = personalise(digest, RECIPIENT)
    for token in PLACEHOLDERS:
        assert token not in done.html and token not in done.text
    assert "尊敬的张三：" in done.html and "尊敬的张三：" in done.text
    assert f"{BASE}/u/tok?x=1&amp;y=2" in done.html
    assert f"{BASE}/u/tok?x=1&y=2" in Page(done.html).hrefs
    assert f"{BASE}/u/tok?x=1&y=2" in done.text
    assert done.subject == digest.subject


def test_personalise_escapes_a_hostile_name_in_html_only(digest: RenderedDigest) -> None:
    name = '<script>alert("x")</script> O\'Brien & Co'
    done = personalise(
        digest, Recipient(name, RECIPIENT.unsubscribe_url, RECIPIENT.preferences_url)
    )
    assert "<script>" not in done.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; O&#x27;Brien &amp; Co" in done.html
    assert f"尊敬的{name}：" in done.text
    assert Page(done.html).tags == Page(digest.html).tags


@pytest.mark.parametrize(("language", "greeting"), [("zh", "您好："), ("en", "Hello,")])
def test_personalise_without_a_name_greets_without_a_gap(language: str, greeting: str) -> None:
    done = personalise(
        tailored(language), Recipient("  ", RECIPIENT.unsubscribe_url, RECIPIENT.preferences_url)
    )
    assert greeting in done.html and greeting in done.text
    assert "尊敬的：" not in done.text and "Dear ," not in done.text


def test_personalise_refuses_script_links(digest: RenderedDigest) -> None:
    with pytest.raises(ValueError, match="http"):
        personalise(digest, Recipient("张三", "javascript:alert(1)", RECIPIENT.preferences_url))


def test_placeholders_survive_rendering(digest: RenderedDigest) -> None:
    assert GREETING in digest.html and GREETING in digest.text
    assert f'href="{UNSUBSCRIBE_URL}"' in digest.html
    assert f'href="{PREFERENCES_URL}"' in digest.html


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(max_size=40)
    | st.sampled_from(PLACEHOLDERS)
    | st.builds("%{}%".format, st.sampled_from(PLACEHOLDERS))  # "%%%GREETING%%%"
    | st.lists(st.sampled_from(["%", "%%", "GREETING", "<", ">", "&", '"', "'", "\n"])).map("".join)
)
def test_personalise_never_leaves_a_placeholder_nor_lets_a_name_add_markup(name: str) -> None:
    digest = _property_digest()
    done = personalise(
        digest, Recipient(name, RECIPIENT.unsubscribe_url, RECIPIENT.preferences_url)
    )
    for token in PLACEHOLDERS:
        assert token not in done.html
        assert token not in done.text
    assert Page(done.html).tags == Page(digest.html).tags


_PROPERTY_DIGEST: list[RenderedDigest] = []


def _property_digest() -> RenderedDigest:
    # Hypothesis reruns the body many times; render once for all of them.
    if not _PROPERTY_DIGEST:
        _PROPERTY_DIGEST.append(tailored())
    return _PROPERTY_DIGEST[0]


# --- errors, environment, cache, web ------------------------------------------------------------


def _templates_copy(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), target)
    return target


def test_mjml_errors_name_the_template(tmp_path: Path) -> None:
    root = _templates_copy(tmp_path)
    (root / "digest.mjml.j2").write_text("<mjml><mj-body><mj-section><mj-column><mj-text>x</mjml>")
    issue = make_issue()
    with pytest.raises(TemplateError, match=r"digest\.mjml\.j2.*MJML"):
        render(issue, select_items(issue, Audience()), env=make_environment(root))


def test_jinja_errors_name_the_template(tmp_path: Path) -> None:
    root = _templates_copy(tmp_path)
    (root / "digest.subject.j2").write_text("{{ no_such_value }}")
    issue = make_issue()
    with pytest.raises(TemplateError, match=r"digest\.subject\.j2.*no_such_value"):
        render(issue, select_items(issue, Audience()), env=make_environment(root))


def test_mj_include_reads_templates_only(tmp_path: Path) -> None:
    root = _templates_copy(tmp_path)
    (root / "partials" / "_extra.mjml").write_text("<mj-text>INCLUDED-PART</mj-text>")
    digest_source = (root / "digest.mjml.j2").read_text()
    (root / "digest.mjml.j2").write_text(
        digest_source.replace(
            "</mj-column>", '<mj-include path="partials/_extra.mjml" /></mj-column>'
        )
    )
    issue = make_issue()
    assert (
        "INCLUDED-PART"
        in render(issue, select_items(issue, Audience()), env=make_environment(root)).html
    )
    (root / "digest.mjml.j2").write_text(
        digest_source.replace("</mj-column>", '<mj-include path="../../etc/passwd" /></mj-column>')
    )
    with pytest.raises(TemplateError, match="digest.mjml.j2"):
        render(issue, select_items(issue, Audience()), env=make_environment(root))


def test_environment_escapes_html_but_not_text(env: jinja2.Environment) -> None:
    assert default_templates_dir() == ROOT / "templates"
    assert env.undefined is jinja2.StrictUndefined
    assert env.from_string("{{ x }}").render(x="<b>") == "<b>"  # no name: not HTML
    for name, escaped in [
        ("a.mjml.j2", True),
        ("a.html.j2", True),
        ("a.txt.j2", False),
        ("a.subject.j2", False),
    ]:
        assert bool(env.autoescape(name)) is escaped  # type: ignore[operator]


def test_cache_renders_each_key_once() -> None:
    cache = ProfileCache()
    calls: list[str] = []

    def renderer(key: str) -> RenderedDigest:
        calls.append(key)
        return RenderedDigest(subject=key, html="", text="", preheader="")

    assert cache.get_or_render("a", lambda: renderer("a")).subject == "a"
    assert cache.get_or_render("a", lambda: renderer("a")).subject == "a"
    assert cache.get_or_render("b", lambda: renderer("b")).subject == "b"
    assert calls == ["a", "b"]
    assert cache.renders == 2


def test_cache_renders_once_under_concurrency(digest: RenderedDigest) -> None:
    cache = ProfileCache()
    started = threading.Barrier(8)

    def slow() -> RenderedDigest:
        return tailored()

    def worker() -> None:
        started.wait()
        cache.get_or_render("same", slow)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.renders == 1


def test_cache_does_not_keep_failures() -> None:
    cache = ProfileCache()

    def broken() -> RenderedDigest:
        raise TemplateError("boom")

    with pytest.raises(TemplateError):
        cache.get_or_render("k", broken)
    assert cache.get_or_render("k", lambda: RenderedDigest("s", "", "", "")).subject == "s"
    assert cache.renders == 1


def test_web_page_has_every_item_under_its_anchor(env: jinja2.Environment) -> None:
    issue = make_issue()
    markup = render_issue_page(issue, sectors=SECTORS, links=LINKS, env=env)
    page = Page(markup)
    assert {item.id for item in issue.items} <= page.ids
    assert "BIOBODY" in page.visible
    assert "&lt;script&gt;" in markup and "<script>" not in markup
    assert "免责声明：免责声明" not in page.visible
    assert_tells_nobody(markup)


def test_web_page_of_the_sample(env: jinja2.Environment) -> None:
    issue, sectors = _sample()
    markup = render_issue_page(issue, sectors=sectors, links=LINKS, env=env)
    assert {item.id for item in issue.items} <= Page(markup).ids
    assert_tells_nobody(markup, issue)


def test_markdown_subset() -> None:
    body = "第一段**重点**\n续行\n\n- 甲\n- 乙\n\n3. 丙\n4. 丁\n\n## 标题 <i>\n\nplain\ntext"
    assert markdown.to_html(body) == (
        "<p>第一段<strong>重点</strong>续行</p><ul><li>甲</li><li>乙</li></ul>"
        '<ol start="3"><li>丙</li><li>丁</li></ol><h4>标题 &lt;i&gt;</h4><p>plain text</p>'
    )
    assert (
        markdown.to_text(body)
        == "第一段重点续行\n\n- 甲\n- 乙\n\n3. 丙\n4. 丁\n\n【标题 <i>】\n\nplain text"
    )
    assert html.unescape(markdown.to_html("a & b < c")) == "<p>a & b < c</p>"


def test_a_source_that_is_not_a_web_address_is_shown_not_linked() -> None:
    item = Item(id="odd", section="policy", title="T", body="B", source="javascript:alert(1)")
    issue = make_issue(items=(item,))
    digest = render(issue, select_items(issue, Audience()))
    assert "javascript:" not in " ".join(Page(digest.html).hrefs)
    assert "来源：javascript:alert(1)" in Page(digest.html).visible

"""The output parsers of ``ocrd.documents.formats`` on answers in each format as its authors
document it, and ``page_object`` building Mistral's page from what they give."""

from __future__ import annotations

import json

import pytest

from ocrd.catalog.catalog import default_entries
from ocrd.catalog.documents import OUTPUT_FORMATS
from ocrd.documents.formats import FORMATS, dots
from ocrd.documents.layout import PageOptions, page_object
from ocrd.errors import UpstreamError

# dots.ocr's prompt_layout_all_en answer for a 1000 x 1400 page, in the resized image's pixels.
DOTS_ANSWER = json.dumps([
    {"bbox": [50, 20, 950, 60], "category": "Page-header", "text": "ACME Corp. annual report"},
    {"bbox": [50, 100, 950, 160], "category": "Title", "text": "# Results"},
    {"bbox": [50, 180, 950, 400], "category": "Text", "text": "Revenue grew by **eleven** percent."},
    {"bbox": [50, 420, 500, 700], "category": "Picture"},
    {"bbox": [50, 720, 950, 780], "category": "Formula", "text": "E = mc^2"},
    {"bbox": [50, 800, 950, 1000], "category": "Table", "text": "<table><tr><td>1</td></tr></table>"},
    {"bbox": [50, 1340, 950, 1380], "category": "Page-footer", "text": "Page 1"},
])

DEEPSEEK_ANSWER = (
    "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 90]]<|/det|>\n# Results\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 120, 900, 300]]<|/det|>\nRevenue grew.\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 320, 500, 600]]<|/det|>\n\n"
    "<|ref|>footer<|/ref|><|det|>[[100, 950, 900, 990]]<|/det|>\nPage 1"
)

OLMOCR_ANSWER = """---
primary_language: en
is_rotation_valid: True
rotation_correction: 0
is_table: False
is_diagram: False
---
# Results

Revenue grew by eleven percent."""


def test_every_format_a_preset_names_is_known_and_most_have_a_parser():
    assert set(FORMATS) <= set(OUTPUT_FORMATS)
    named = {preset.format for entry in default_entries() for preset in entry.presets.values()}
    assert named <= set(OUTPUT_FORMATS)
    for entry in default_entries():  # the preset /v1/ocr uses by default can be read
        preset = (entry.document.preset if entry.document else None) or entry.default_preset
        if entry.document is not None:
            assert entry.presets[preset].format in FORMATS, entry.id


def test_dots_layout_scales_boxes_back_to_the_page_and_types_the_blocks():
    # 1000 x 1400 is seen as 1008 x 1400 (multiples of 28): x scales by 1000/1008.
    assert dots.smart_resize(1400, 1000) == (1400, 1008)
    layout = FORMATS["dots-layout"].parse(DOTS_ANSWER, 1000, 1400)
    assert [b.type for b in layout.blocks] == ["header", "title", "text", "image", "equation", "table", "footer"]
    assert layout.blocks[2].box == (50, 180, 942, 400)
    assert layout.blocks[3].content == ""  # a picture has no text
    assert layout.blocks[4].content == "$$\nE = mc^2\n$$"


def test_dots_layout_refuses_output_that_is_not_its_json():
    with pytest.raises(UpstreamError, match="not JSON"):
        FORMATS["dots-layout"].parse('[{"bbox": [1, 2', 100, 100)
    with pytest.raises(UpstreamError, match="list of"):
        FORMATS["dots-layout"].parse('[{"category": "Text"}]', 100, 100)


def test_deepseek_grounding_boxes_on_the_999_grid_become_page_pixels():
    layout = FORMATS["deepseek-grounding"].parse(DEEPSEEK_ANSWER, 999 * 2, 999)
    assert [b.type for b in layout.blocks] == ["title", "text", "image", "footer"]
    assert layout.blocks[0].box == (200, 50, 1800, 90)
    assert layout.blocks[1].content == "Revenue grew."
    plain = FORMATS["deepseek-grounding"].parse("just markdown, no tags", 10, 10)
    assert not plain.has_boxes and plain.blocks[0].content == "just markdown, no tags"


def test_olmocr_front_matter_is_read_and_left_out_of_the_markdown():
    layout = FORMATS["olmocr"].parse(OLMOCR_ANSWER, 100, 100)
    assert layout.facts == {"primary_language": "en", "is_rotation_valid": True, "rotation_correction": 0,
                            "is_table": False, "is_diagram": False}
    assert layout.blocks[0].content == "# Results\n\nRevenue grew by eleven percent."


def test_ocrd_blocks_groups_numbered_and_unnumbered_lines_into_paragraphs():
    def line(text, box, paragraph=None):
        return {"text": text, "box": box, "confidence": 0.9, "paragraph": paragraph,
                "words": [{"text": w, "confidence": 0.9} for w in text.split()]}

    # PP-OCR: no numbers; two close lines make a paragraph, a line far below starts another.
    ppocr = {"width": 500, "height": 500, "lines": [
        line("first line", [10, 10, 300, 40]), line("second line", [10, 50, 280, 80]),
        line("far below", [10, 300, 200, 330])]}
    layout = FORMATS["ocrd-blocks"].parse(json.dumps(ppocr), 500, 500)
    assert [(b.content, b.box) for b in layout.blocks] == [
        ("first line\nsecond line", (10, 10, 300, 80)), ("far below", (10, 300, 200, 330))]
    # tesseract: its own paragraph numbers decide, whatever the geometry.
    tess = {"width": 500, "height": 500, "lines": [
        line("a", [10, 10, 30, 40], 0), line("b", [10, 50, 30, 80], 1), line("c", [10, 90, 30, 120], 1)]}
    assert [b.content for b in FORMATS["ocrd-blocks"].parse(json.dumps(tess), 500, 500).blocks] == ["a", "b\nc"]
    with pytest.raises(UpstreamError):
        FORMATS["ocrd-blocks"].parse('{"lines": [{"text": "x"}]}', 10, 10)


def test_page_object_moves_header_and_footer_out_of_the_markdown_when_asked():
    layout = FORMATS["dots-layout"].parse(DOTS_ANSWER, 1000, 1400)
    images = [{"id": "img-0.jpeg", "top_left_x": 50, "top_left_y": 420, "bottom_right_x": 496,
               "bottom_right_y": 700, "image_base64": None}]
    dims = {"dpi": 200, "width": 1000, "height": 1400}
    kept = page_object(0, layout, dims, PageOptions(), images)
    assert kept["markdown"].startswith("ACME Corp. annual report\n\n# Results")
    assert "![img-0.jpeg](img-0.jpeg)" in kept["markdown"] and kept["header"] is None
    moved = page_object(0, layout, dims, PageOptions(extract_header=True, extract_footer=True), images)
    assert moved["markdown"].startswith("# Results") and not moved["markdown"].endswith("Page 1")
    assert (moved["header"], moved["footer"]) == ("ACME Corp. annual report", "Page 1")
    assert [b["type"] for b in moved["blocks"]][:2] == ["header", "title"]  # blocks keep every block
    assert moved["blocks"][3]["image_id"] == "img-0.jpeg"


def test_word_scores_point_into_the_markdown():
    answer = json.dumps({"width": 100, "height": 100, "lines": [
        {"text": "alpha beta", "box": [0, 0, 50, 10], "confidence": 0.5, "paragraph": 0,
         "words": [{"text": "alpha", "confidence": 0.5}, {"text": "beta", "confidence": 0.75}]},
        {"text": "gamma", "box": [0, 50, 50, 60], "confidence": 1.0, "paragraph": 1,
         "words": [{"text": "gamma", "confidence": 1.0}]}]})
    layout = FORMATS["ocrd-blocks"].parse(answer, 100, 100)
    page = page_object(0, layout, {"dpi": 72, "width": 100, "height": 100}, PageOptions(confidence="word"), [])
    assert page["markdown"] == "alpha beta\n\ngamma"
    words = page["confidence_scores"]["word_confidence_scores"]
    assert [(w["text"], w["start_index"]) for w in words] == [("alpha", 0), ("beta", 6), ("gamma", 12)]
    assert page["confidence_scores"]["average_page_confidence_score"] == 0.75
    assert page["confidence_scores"]["minimum_page_confidence_score"] == 0.5


def test_reading_order_reads_a_spanning_title_then_each_column_to_its_end():
    from ocrd.documents.reading_order import reading_order

    boxes = [
        (520, 200, 900, 300),  # right column, first paragraph
        (100, 50, 900, 120),   # title across both columns
        (100, 200, 480, 300),  # left column, first paragraph
        (100, 320, 480, 420),  # left column, second paragraph
        (520, 320, 900, 420),  # right column, second paragraph
        (100, 900, 900, 950),  # footer across both columns
    ]
    assert reading_order(boxes) == [1, 2, 3, 0, 4, 5]


def test_ocrd_blocks_with_layout_regions_types_blocks_and_keeps_text_found_in_figures():
    def line(text, box):
        return {"text": text, "box": box, "confidence": 0.9, "paragraph": None,
                "words": [{"text": w, "confidence": 0.9} for w in text.split()]}

    answer = {"width": 1000, "height": 1400, "rotation": 90, "lines": [
        line("ACME report", [100, 20, 400, 40]), line("Results", [100, 100, 500, 160]),
        line("Revenue grew", [100, 200, 600, 230]), line("in every quarter", [100, 240, 620, 270]),
        line("Q1 Q2", [150, 600, 300, 630]), line("stray words", [100, 1200, 300, 1230]),
        line("7", [490, 1360, 510, 1380])],
        "regions": [
            {"type": "header", "box": [90, 10, 410, 50], "score": 0.8},
            {"type": "title", "box": [90, 90, 510, 170], "score": 0.9},
            {"type": "text", "box": [0, 0, 1000, 300], "score": 0.5},  # holds the others: the smallest wins
            {"type": "figure", "box": [100, 400, 700, 800], "score": 0.7},
            {"type": "footer", "box": [480, 1350, 520, 1390], "score": 0.9},
            {"type": "table", "box": [100, 900, 700, 1000], "score": 0.6},  # no text in it: dropped
        ]}
    layout = FORMATS["ocrd-blocks"].parse(json.dumps(answer), 1000, 1400)
    assert layout.rotation == 90
    assert [(b.type, b.content) for b in layout.blocks] == [
        ("header", "ACME report"), ("title", "# Results"), ("text", "Revenue grew\nin every quarter"),
        ("image", ""), ("text", "Q1 Q2"), ("text", "stray words"), ("footer", "7")]
    assert layout.blocks[2].box == (100, 200, 620, 270)  # boxed by its lines, not the loose region


def test_ppocr_lines_are_cut_at_column_gaps():
    from ocrd.worker.ocr_lines import TextBox, split_at_gaps

    line = [TextBox("left", 0, 0, 20, 100), TextBox("column", 110, 0, 20, 200), TextBox("right", 400, 0, 20, 480)]
    assert [[b.text for b in part] for part in split_at_gaps(line)] == [["left", "column"], ["right"]]


def test_tables_convert_both_ways_and_merged_cells_fill_their_span():
    from ocrd.documents.tables import TableCollector, html_rows, pipe_rows

    html = ('<table><tr><th>A</th><th colspan="2">B &amp; C</th></tr>'
            '<tr><td rowspan="2">1</td><td>2</td><td>3|x</td></tr><tr><td>4</td><td>5</td></tr></table>')
    assert html_rows(html) == [["A", "B & C", ""], ["1", "2", "3|x"], ["", "4", "5"]]
    text = f"Intro\n\n{html}\n\nbetween\n\n| h1 | h2 |\n|---|:-:|\n| a | b |\n\nend"
    markdown = TableCollector("markdown")
    out, tables = markdown.extract(text)
    assert out == "Intro\n\n[tbl-0.md](tbl-0.md)\n\nbetween\n\n[tbl-1.md](tbl-1.md)\n\nend"
    assert pipe_rows(tables[0]["content"]) == [["A", "B & C", ""], ["1", "2", "3|x"], ["", "4", "5"]]
    as_html = TableCollector("html")
    _, tables = as_html.extract(text)
    assert [t["id"] for t in tables] == ["tbl-0.html", "tbl-1.html"]
    assert html_rows(tables[1]["content"]) == [["h1", "h2"], ["a", "b"]]
    assert as_html.extract("| x |\n|---|\n| y |")[1][0]["id"] == "tbl-2.html"  # numbered per request


def test_page_object_takes_tables_out_when_a_table_format_is_asked_for():
    from ocrd.documents.tables import TableCollector, html_rows

    layout = FORMATS["dots-layout"].parse(DOTS_ANSWER, 1000, 1400)
    page = page_object(0, layout, {"dpi": 200, "width": 1000, "height": 1400}, PageOptions(), [],
                       TableCollector("html"))
    (table,) = page["tables"]
    assert html_rows(table["content"]) == [["1"]] and table["format"] == "html"
    assert "[tbl-0.html](tbl-0.html)" in page["markdown"] and "<table>" not in page["markdown"]
    assert [b.get("table_id") for b in page["blocks"] if b["type"] == "table"] == ["tbl-0.html"]


def test_doctags_recorded_by_docling_become_typed_blocks_and_html_tables():
    from pathlib import Path

    from ocrd.documents.tables import html_rows

    recorded = (Path(__file__).parents[1] / "data" / "doctags" / "01030000000083.dt").read_text()
    layout = FORMATS["doctags"].parse(recorded, 1000, 1000)  # a 500-grid: page pixels = 2 x locations
    assert [b.type for b in layout.blocks] == ["table", "caption", "table", "caption", "text", "table",
                                               "caption", "text", "footer", "header"]
    first_table, caption = layout.blocks[0], layout.blocks[1]
    assert first_table.box == (166, 170, 834, 408) and caption.box == (164, 116, 666, 152)
    assert caption.content == "TABLE 35: UNION-STATE BREAKDOWN OF IMPRISONMENT CLAUSES BY CATEGORIES"
    assert html_rows(layout.blocks[2].content) == [
        ["Compliances", "Small", "Medium", "Large"], ["Total Applicable Compliances", "669", "3,109", "5,796"],
        ["Compliances with imprisonment", "461", "2,172", "4,085"],
        ["Percentage of imprisonment clauses", "69%", "70%", "70%"]]
    assert html_rows(layout.blocks[5].content)[0] == ["", "Small", "Medium", "Large"]  # <ecel> first
    page = page_object(0, layout, {"dpi": 144, "width": 1000, "height": 1000},
                       PageOptions(extract_header=True, extract_footer=True), [])
    assert (page["header"], page["footer"]) == ("Appendices", "85")
    assert page["markdown"].endswith("* In Table 36")


def test_doctags_headings_lists_and_pictures():
    answer = ("<doctag><section_header_level_2><loc_10><loc_10><loc_200><loc_20>Method</section_header_level_2>"
              "<ordered_list><list_item><loc_10><loc_30><loc_200><loc_40>first</list_item>"
              "<list_item><loc_10><loc_40><loc_200><loc_50>second</list_item></ordered_list>"
              "<picture><loc_10><loc_60><loc_300><loc_200><bar_chart><caption><loc_10><loc_205><loc_300>"
              "<loc_215>Figure 2</caption></picture>"
              "<formula><loc_10><loc_220><loc_200><loc_230>a^2 + b^2</formula></doctag>")
    layout = FORMATS["doctags"].parse(answer, 500, 500)
    assert [(b.type, b.content) for b in layout.blocks] == [
        ("title", "### Method"), ("list", "1. first"), ("list", "1. second"), ("image", ""),
        ("caption", "Figure 2"), ("equation", "$$\na^2 + b^2\n$$")]
    assert layout.blocks[3].box == (10, 60, 300, 200)


def test_nanonets_tags_become_blocks_and_leave_the_markdown():
    # In the form the card's prompt asks for.
    answer = ("# Invoice 2024-117\n\n<watermark>OFFICIAL COPY</watermark>\n\nTotal due: 1,200 EUR ☑ paid\n\n"
              "<img>A bar chart of monthly revenue</img>\n\n<signature>J. Smith</signature>\n\n"
              "<page_number>3/12</page_number>")
    layout = FORMATS["nanonets"].parse(answer, 100, 100)
    assert [(b.type, b.content) for b in layout.blocks] == [
        ("text", "# Invoice 2024-117"), ("aside_text", "OFFICIAL COPY"), ("text", "Total due: 1,200 EUR ☑ paid"),
        ("caption", "A bar chart of monthly revenue"), ("signature", "J. Smith"), ("footer", "3/12")]
    page = page_object(0, layout, {"dpi": 150, "width": 100, "height": 100}, PageOptions(extract_footer=True), [])
    assert page["footer"] == "3/12" and "<" not in page["markdown"] and page["blocks"] is None

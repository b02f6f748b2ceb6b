"""voice.markdown: benchmark sections are replaced in place, the rest of the file kept."""

from voice.markdown import update_section


def test_sections_are_replaced_or_appended(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## A\nold a\n\n## B\nb body\n", encoding="utf-8")
    update_section(path, "## A", "## A\nnew a\n")
    update_section(path, "## C", "## C\nc\n")
    assert (
        path.read_text(encoding="utf-8")
        == "# Benchmarks\n\n## A\nnew a\n\n## B\nb body\n\n## C\nc\n"
    )


def test_a_missing_file_is_created(tmp_path):
    update_section(tmp_path / "new.md", "## X", "## X\nx")
    assert (tmp_path / "new.md").read_text(encoding="utf-8") == "# Benchmarks\n\n## X\nx\n"

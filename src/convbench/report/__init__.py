"""L4b report: figures (all matplotlib), Markdown sections, REPORT.md (document), the glossary."""

"""The report's languages (`--lang en|es`): complete catalogues, Spanish reports, numbers, the CLI and the pipeline.

    .venv/bin/pytest tests/test_i18n.py -q

The catalogue tests extract every message from convbench's source with Babel, as `pybabel extract`
does (convbench/i18n.py gives the commands), and hold the Spanish catalogue to it: a message without
a Spanish translation fails here, and so does a translation that dropped a placeholder or changed a
`code` span. The report tests render the fixture runs of test_report.py and test_report_sections.py.
"""

from __future__ import annotations

import copy
import json
import re
import string
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_report import BASE, _curve, _results, _run, _transfer_curve  # noqa: E402

from convbench import i18n  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402

PACKAGE = Path(i18n.__file__).resolve().parent
QUESTIONS_ES = ("### ¿Cuál fue el mejor?", "### ¿Por qué?", "### ¿Qué mejoraría?", "### ¿Cómo lo mejoraría?")
QUESTIONS_EN = ("### Which was best?", "### Why?", "### What would I improve?", "### How would I improve it?")


# ---------------------------------------------------------------------------------------------
# Catalogues


def _key(message) -> tuple:
    return (message.context, message.id if isinstance(message.id, str) else tuple(message.id))


def _source_messages() -> dict[tuple, object]:
    """Every message the package's source marks for translation (`_`, `ngettext`, `pgettext`, `N_`)."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

    catalog = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(
            str(PACKAGE), method_map=[("**.py", "python")], keywords=DEFAULT_KEYWORDS, comment_tags=("Translators:",)):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return {_key(m): m for m in catalog if m.id}


def _catalogue(path: Path):
    from babel.messages.pofile import read_po

    with open(path, "rb") as fh:
        return read_po(fh, locale="es" if "/es/" in str(path) else None)


def test_every_message_has_a_spanish_translation():
    """A message added to the code without a Spanish translation fails here (issue 16)."""
    source = _source_messages()
    assert len(source) > 300  # the extraction found the report's messages at all
    spanish = {_key(m): m for m in _catalogue(i18n.catalogue_path("es")) if m.id}
    missing = [key[1] for key in source if key not in spanish]
    untranslated = [key[1] for key, m in spanish.items() if key in source and
                    (m.fuzzy or not all(m.string if isinstance(m.string, tuple) else (m.string,)))]
    stale = [key[1] for key in spanish if key not in source]
    assert not missing, f"messages without a Spanish entry (run pybabel extract/update, see convbench/i18n.py): {missing}"
    assert not untranslated, f"Spanish entries that are empty or fuzzy: {untranslated}"
    assert not stale, f"Spanish entries no longer in the source (pybabel update drops them): {stale}"


def test_the_template_lists_the_messages_of_the_source():
    template = {_key(m) for m in _catalogue(i18n.LOCALE_DIR / "convbench.pot") if m.id}
    assert template == set(_source_messages()), "convbench.pot is stale: run the pybabel extract command of convbench/i18n.py"


def _fields(text: str) -> list[str]:
    return sorted({name for _literal, name, _spec, _conv in string.Formatter().parse(text) if name is not None})


def test_translations_keep_every_placeholder_and_code_span():
    """`{name}` fields must all be there (str.format would fail or lose a number), and commands,
    config keys and snippets in backticks stay exactly as the English has them."""
    problems = []
    for m in _catalogue(i18n.catalogue_path("es")):
        if not m.id:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        for msgid, msgstr in zip(ids, strings):
            if _fields(msgid) != _fields(msgstr):
                problems.append(f"fields differ: {msgid!r} -> {msgstr!r}")
            problems += [f"code span {code} changed: {msgstr!r}" for code in re.findall(r"`[^`]+`", msgid) if code not in msgstr]
    assert not problems, "\n".join(problems)


def test_no_message_literal_hides_inside_an_f_string():
    """Babel cannot see `_("...")` inside an f-string's braces: such a message would never be translated."""
    hidden = re.compile(r"""\bf(["']).*\{[^}]*\b(_|ngettext|pgettext|N_)\(\s*["']""")
    found = [f"{path.relative_to(PACKAGE)}:{n}" for path in PACKAGE.rglob("*.py")
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if hidden.search(line)]
    assert not found, found


def test_no_function_shadows_the_translation_function():
    """`handles, _ = ...` in a function that also calls `_("...")` makes `_` local: UnboundLocalError at run time."""
    import ast

    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            inner = [n for n in ast.walk(node) if not isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp))]
            stores = any(isinstance(n, ast.Name) and n.id == "_" and isinstance(n.ctx, ast.Store) for n in inner)
            calls = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_" for n in ast.walk(node))
            if stores and calls:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert not found, found


def test_the_catalogue_is_the_standard_gettext_object_and_english_is_the_source():
    import gettext

    es = i18n.translations("es")
    assert isinstance(es, gettext.GNUTranslations)
    assert es.gettext("Which was best?") == "¿Cuál fue el mejor?"
    assert es.ngettext("{n} epoch", "{n} epochs", 1) == "{n} época" and es.ngettext("{n} epoch", "{n} epochs", 4) == "{n} épocas"
    assert type(i18n.translations("en")) is gettext.NullTranslations
    with i18n.use_language("es"):
        assert i18n._("Why?") == "¿Por qué?"
        with i18n.use_language("en"):
            assert i18n._("Why?") == "Why?"
        assert i18n.current_language() == "es"
    assert i18n.current_language() == "en"


# ---------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize("value, spec, en, es", [
    (80.25, ".2f", "80.25", "80,25"),
    (-0.5, "+.2f", "-0.50", "-0,50"),
    (45000, ",", "45,000", "45.000"),
    (1000, ",", "1,000", "1000"),  # Spanish groups from five digits on
    (1234567.891, ",.1f", "1,234,567.9", "1.234.567,9"),
    (1.17e13, ".3g", "1.17e+13", "1,17e+13"),
])
def test_numbers_follow_the_language(value, spec, en, es):
    assert i18n.number(value, spec) == en
    with i18n.use_language("es"):
        assert i18n.number(value, spec) == es
        # Numbers passed to fmt are localised; strings (code, config values) are left alone.
        assert i18n.fmt("{x:" + spec + "} `{code}`", x=value, code="0.1") == f"{es} `0.1`"


def test_figure_ticks_use_the_decimal_comma_in_spanish():
    from convbench.report.figures import localise_ticks, pyplot

    plt = pyplot()
    for lang, mark in (("es", ","), ("en", ".")):
        with i18n.use_language(lang):
            fig, ax = plt.subplots()
            ax.plot([0, 0.5, 1.0], [0.25, 0.5, 0.75])
            ax.set_xticks([0.0, 0.5, 1.0], labels=None)
            localise_ticks(fig)
            fig.canvas.draw()
            labels = [t.get_text() for t in ax.get_xticklabels()]
        plt.close(fig)
        assert labels == [f"0{mark}0", f"0{mark}5", f"1{mark}0"], labels


# ---------------------------------------------------------------------------------------------
# Reports


def _fixture_run():
    """Three models (one transfer), curves that trigger advice: the test_report fixtures."""
    runs = copy.deepcopy(BASE) + [_run("efficientnet_lite0", "transfer", 0.66, 0.68, 0.70, 1.4e8, 3.6e6)]
    runs[0]["train_accuracy_at_best"] = 0.99  # overfits: regularization advice
    runs[-1]["head_steps_run"], runs[-1]["epochs_run"] = 150, 2
    runs[0]["notes_i18n"] = [{"msgid": "feature caching: {seconds:.1f} s for {images} images",
                              "args": {"seconds": 10.9, "images": "1000"}}]
    runs[0]["notes"] = ["feature caching: 10.9 s for 1000 images"]
    runs[0].update(mixed_precision="mixed_bfloat16", precision_reason="AVX512-BF16 present",
                   precision_reason_i18n={"msgid": "{isa} present", "args": {"isa": "AVX512-BF16"}})
    hist = {"cnn_vgg_seed0": _curve(0.79, True), "cnn_resnet_seed0": _curve(0.69, False),
            "efficientnet_lite0_seed0": _transfer_curve([0.65, 0.68, 0.66], [0.60, 0.62])}
    figures = {"curves": "figures/learning_curves.png", "confusion": "figures/confusion_matrices.png",
               "per_class": "figures/per_class_accuracy.png", "accuracy_flops": "figures/accuracy_vs_flops.png"}
    return _results(runs), hist, figures


def _render(lang: str) -> str:
    from convbench.report.document import render_markdown

    res, hist, figures = _fixture_run()
    with i18n.use_language(lang):
        return render_markdown(res, hist, figures)


# A number written with a decimal point (0.79, 80.25, 1.2e+13), not Spanish digit grouping (45.000).
DECIMAL_POINT = re.compile(r"\b0\.\d|\d\.\d{1,2}(?!\d)|\d\.\d{4,}")


def _headings(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("#")]


def _prose(md: str) -> str:
    """The report without code spans, image targets and the versions line (identifiers, not words)."""
    text = re.sub(r"`[^`]*`", "", md)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith(("- Versions", "- Versiones")))


def test_the_spanish_report_answers_the_four_questions():
    es = _render("es")
    positions = [es.index(q) for q in QUESTIONS_ES]
    assert positions == sorted(positions)
    for question, answer in zip(QUESTIONS_ES, es.split("### ")[-4:]):
        assert answer.split("\n", 1)[1].strip(), f"{question} has no answer"
    conclusions = es.split("## Conclusiones")[1]
    assert "señal de sobreajuste" in conclusions and "Regularizar más: la brecha entrenamiento-validación es de +20,00 puntos" in conclusions
    assert "`augment.cutout: 8`" in conclusions  # config values stay as they are typed


def test_the_spanish_report_writes_decimal_commas_and_keeps_code_as_typed():
    es = _render("es")
    assert "| cnn_vgg | desde cero | 80,00 % |" in es
    assert "+10,00 puntos por delante de cnn_resnet" in es
    assert DECIMAL_POINT.search(_prose(es)) is None, DECIMAL_POINT.findall(_prose(es))
    assert "`overrides: {efficientnet_lite0: {transfer: {resolution: 128}}}`" in es or "`--seeds 3`" in es


def test_the_spanish_report_has_no_english_left():
    en, es = _render("en"), _render("es")
    assert not set(_headings(en)) & set(_headings(es)), set(_headings(en)) & set(_headings(es))
    # Stored texts (training notes, the precision's reason) are shown from their msgids too.
    assert "precálculo de características: 10,9 s para 1000 imágenes" in es and "AVX512-BF16 presente" in es
    english = re.compile(r"\b(the|and|with|of|is|are|was|accuracy|validation|training|epochs?|seeds?|points|"
                         r"improve|which|why|how|model default|none)\b", re.I)
    leftovers = [m.group(0) for m in english.finditer(_prose(es))]
    assert not leftovers, leftovers


def test_the_english_report_is_unchanged_in_content():
    en = _render("en")
    for heading in ("## Setup", "## Comparison", "## Training recipes", "## Conclusions", *QUESTIONS_EN, "## Glossary"):
        assert heading in en
    assert "| cnn_vgg | custom | 80.00 %" in en
    assert "Regularize more: the train-validation gap is +20.00 points" in en
    assert "- cnn_vgg (seed 0): feature caching: 10.9 s for 1000 images" in en
    assert "¿" not in en and "exactitud" not in en


def test_the_glossary_explains_the_same_terms_in_both_languages():
    """The glossary's spellings are translated with the report: the same terms trigger in Spanish."""
    from convbench.report.glossary import TERMS, used_terms

    en, es = _render("en"), _render("es")
    with i18n.use_language("es"):
        es_terms = used_terms(es.split("## Glosario")[0])
        listed = re.findall(r"^- \*\*(.+?)\*\*:", es.split("## Glosario")[1], re.M)
        assert listed == [i18n._(TERMS[i][0]) for i in es_terms]
    assert es_terms == used_terms(en.split("## Glossary")[0]) and len(es_terms) >= 8


def test_the_statistics_sections_in_spanish():
    """The report.sections sections (summary, tests, seeds, calibration, robustness, ablation) in Spanish."""
    import test_report_sections as trs

    from convbench.report import sections as rs
    from convbench.analysis.stats import ablation_effects, compare_models

    decided = trs._roundtrip(compare_models(trs._predictions({"resnet": 0.90, "vgg": 0.80}, 2, 0), n_boot=200))
    undecided = trs._roundtrip(compare_models(trs._predictions({"a_net": 0.80, "b_net": 0.80}, 1, 1), n_boot=200))
    runs = trs._predictions({"aug=none": 0.80, "aug=crop+flip": 0.72, "wd=off": 0.80, "wd=on": 0.86}, 2, 3)
    effects = trs._roundtrip(ablation_effects(runs, [
        {"factor": "augmentation (crop+flip)", "without": "aug=none", "with": "aug=crop+flip"},
        {"factor": "weight decay", "without": "wd=off", "with": "wd=on"}], model="resnet", n_boot=200))
    robust = [{"model": "a", "clean_accuracy": 0.85, "test_accuracy": 0.8, "tta_accuracy": 0.81,
               "accuracy_by_corruption": {"gaussian_noise": [0.5] * 5, "fog": [0.7] * 5}}]
    calibration = [{"model": "a", "ece_before": 0.08, "ece_after": 0.02, "temperature": 1.6, "nll_before": 0.9, "nll_after": 0.8}]
    with i18n.use_language("es"):
        text = "\n".join([
            rs.render_executive_summary(decided, None, trs.COSTS, budget="10 épocas cada uno"),
            rs.render_executive_summary(undecided), rs.render_significance_section(undecided),
            rs.render_seed_table({"small": [0.70], "big": [0.81, 0.83]}),
            rs.render_calibration_section(calibration, figures={"a": "figures/a.png"}),
            rs.render_robustness_section(robust, subset_images=1000, test_images=10000),
            rs.render_ablation_section(effects)])
    for expected in ("## Resumen ejecutivo", "**Gana resnet**", "**No hay ganador", "## ¿Es real la diferencia?",
                     "una sola semilla: la variación entre semillas es desconocida", "## Calibración",
                     "## Robustez frente a perturbaciones comunes", "ruido gaussiano", "Exactitud limpia (%), 1000 imágenes",
                     "las 10.000", "aumento de datos (recorte+volteo)", "decaimiento de pesos", "En resumen:"):
        assert expected in text, expected
    assert DECIMAL_POINT.search(_prose(text)) is None, re.findall(r".{30}\d\.\d.{10}", _prose(text))


def test_render_report_uses_the_recorded_language_unless_told_another(tmp_path):
    """`convbench run --lang es` records es in the config; `convbench report` re-renders in it, and
    `--lang` wins for that render without changing what the run recorded."""
    import pandas as pd

    from convbench.report.document import write_report

    res, _hist, _figures = _fixture_run()
    res["config"]["lang"] = "es"
    (tmp_path / "history").mkdir()
    for name in ("cnn_vgg", "cnn_resnet"):
        pd.DataFrame(_curve(0.7, True)).to_csv(tmp_path / "history" / f"{name}_seed0.csv", index=False)
    (tmp_path / "results.json").write_text(json.dumps(res))
    text = write_report(tmp_path).read_text()
    assert all(q in text for q in QUESTIONS_ES)
    text = write_report(tmp_path, lang="en").read_text()
    assert all(q in text for q in QUESTIONS_EN)
    assert json.loads((tmp_path / "results.json").read_text())["config"]["lang"] == "es"
    assert (tmp_path / "figures" / "learning_curves.png").stat().st_size > 5000
    assert i18n.current_language() == "en"  # the render's language does not leak out of it


# ---------------------------------------------------------------------------------------------
# Command line and config


def test_a_bad_lang_is_one_clear_error_line(tmp_path, capsys):
    from convbench.cli.commands import build_parser, main
    from convbench.cli.options import resolve_config

    assert main(["report", str(tmp_path), "--lang", "fr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convbench: error: unknown report language 'fr'; pass --lang en or --lang es")
    for command in ("run", "ablate"):
        args = build_parser().parse_args([command, "--data", str(tmp_path), "--lang", "fr"])
        with pytest.raises(ConvbenchError, match="unknown report language 'fr'"):
            resolve_config(args)
    assert resolve_config(build_parser().parse_args(["run", "--lang", "ES"])).lang == "es"
    config = tmp_path / "c.yaml"
    config.write_text("lang: de\n")
    with pytest.raises(ConvbenchError, match="lang must be en or es, got 'de'"):
        resolve_config(build_parser().parse_args(["run", "--config", str(config)]))


def test_the_language_is_saved_with_the_run_but_never_retrains_it():
    from convbench.cli.commands import build_parser
    from convbench.cli.options import resolve_config
    from convbench.config import from_dict, to_dict
    from convbench.experiment.run_folders import config_hash
    from convbench.experiment.comparison import config_fingerprint

    es = resolve_config(build_parser().parse_args(["run", "--lang", "es"]))
    en = resolve_config(build_parser().parse_args(["run"]))
    assert to_dict(es)["lang"] == "es" and from_dict(to_dict(es)).lang == "es" and en.lang == "en"
    assert config_hash(es) == config_hash(en)  # same run folder: `--lang es` re-renders the same results
    assert config_fingerprint(es, {}) == config_fingerprint(en, {})


def test_stored_messages_render_in_the_report_language():
    """Texts made during training (notes, reasons) keep their msgid, so a later report translates them."""
    from convbench.training.loop import choose_precision

    note = i18n.Message(i18n.N_("{n} variables at {rate:.3g}"), n="4", rate=0.0001)
    assert note == "4 variables at 0.0001"
    stored = json.loads(json.dumps(i18n.message_data(note)))
    with i18n.use_language("es"):
        assert i18n.render_stored(stored) == "4 variables a 0,0001"
        assert i18n.render_stored("plain text of an old run") == "plain text of an old run"
        assert i18n.render_stored(None, fallback="old") == "old"
    _policy, reason = choose_precision("off")
    assert reason == "mixed_precision: off" and i18n.message_data(reason) == {"msgid": "mixed_precision: off", "args": {}}


# ---------------------------------------------------------------------------------------------
# Pipeline


def test_the_pipelines_report_step_takes_lang(tmp_path):
    import argparse

    import yaml

    from convbench.cli.commands import main
    from convbench.cli.options import add_lang_option, add_run_options
    from convbench.cli.pipeline import pipeline_arguments

    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "--out", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["lang"]["defaultValue"] == "en" and root["lang"]["isOptional"]  # compiled runs without it still work
    component = spec["components"]["comp-render-report"]["inputDefinitions"]["parameters"]
    assert component["lang"]["defaultValue"] == "en"
    task = spec["root"]["dag"]["tasks"]["render-report"]["inputs"]["parameters"]
    assert task["lang"]["componentInputParameter"] == "lang"
    # Only the report step gets it: the training steps' cache does not depend on the language.
    assert all("lang" not in (t.get("inputs", {}).get("parameters") or {})
               for name, t in spec["root"]["dag"]["tasks"].items() if name != "render-report")

    parser = argparse.ArgumentParser()
    add_run_options(parser)
    add_lang_option(parser)
    assert pipeline_arguments(parser.parse_args(["--lang", "es"]))["lang"] == "es"
    assert "lang" not in pipeline_arguments(parser.parse_args([]))
    config = tmp_path / "c.yaml"
    config.write_text("lang: es\n")
    assert pipeline_arguments(parser.parse_args(["--config", str(config)]))["lang"] == "es"

"""Which language a registry task evaluates, as oellm-eval derives it, so `group[deu_Latn]` selects tasks
across benchmarks that spell German `deu_Latn`, `de`, `German` or `X-CSQA-de`.

Users write only the canonical `lang_Scri` code; the looser spellings below are the benchmarks' own
(dataset configs, task-name suffixes), folded here and nowhere else. No library maps all of these
(langcodes knows ISO codes but not `X-CSQA-de` or the macrolanguage choices FLORES makes, e.g. `lvs`).
"""

from __future__ import annotations

import re

from oellm.errors import OellmError

# canonical code -> its ISO 639-1 codes and English names as benchmarks spell them
_SPELLINGS: dict[str, tuple[str, ...]] = {
    "als_Latn": ("sq", "albanian"), "aze_Latn": ("az", "azerbaijani"), "bel_Cyrl": ("be", "belarusian"),
    "bos_Latn": ("bs", "bosnian"), "bul_Cyrl": ("bg", "bulgarian"), "cat_Latn": ("ca", "catalan"),
    "ces_Latn": ("cs", "czech"), "dan_Latn": ("da", "danish"), "deu_Latn": ("de", "german"),
    "ell_Grek": ("el", "greek"), "eng_Latn": ("en", "english"), "est_Latn": ("et", "estonian"),
    "eus_Latn": ("eu", "basque"), "fin_Latn": ("fi", "finnish"), "fra_Latn": ("fr", "french"),
    "gle_Latn": ("ga", "irish"), "glg_Latn": ("gl", "galician"), "heb_Hebr": ("he", "hebrew"),
    "hrv_Latn": ("hr", "croatian"), "hun_Latn": ("hu", "hungarian"), "hye_Armn": ("hy", "armenian"),
    "isl_Latn": ("is", "icelandic"), "ita_Latn": ("it", "italian"), "kat_Geor": ("ka", "georgian"),
    "lit_Latn": ("lt", "lithuanian"), "lvs_Latn": ("lv", "latvian"), "mkd_Cyrl": ("mk", "macedonian", "north macedonian"),
    "mlt_Latn": ("mt", "maltese"), "nld_Latn": ("nl", "dutch"), "nob_Latn": ("nb", "no", "norwegian"),
    "pol_Latn": ("pl", "polish"), "por_Latn": ("pt", "portuguese"), "ron_Latn": ("ro", "romanian"),
    "rus_Cyrl": ("ru", "russian"), "slk_Latn": ("sk", "slovak"), "slv_Latn": ("sl", "slovenian"),
    "spa_Latn": ("es", "spanish"), "srp_Cyrl": ("sr", "serbian"), "swe_Latn": ("sv", "swedish"),
    "tur_Latn": ("tr", "turkish"), "ukr_Cyrl": ("uk", "ukrainian"),
}
ALIASES = {s: code for code, spellings in _SPELLINGS.items() for s in spellings}
MACRO = {"ekk_Latn": "est_Latn"}  # Standard Estonian (global-piqa) is the est_Latn of the other benchmarks


def canonical(spelling: str | None) -> str | None:
    """`de`, `German`, `X-CSQA-de`, `deu_latn`, `por_latn_port` or `deu_Latn` -> `deu_Latn`; None if not a language."""
    if not spelling:
        return None
    text = str(spelling).strip()
    low = text.lower().removeprefix("x-csqa-")
    if low in ALIASES:
        return ALIASES[low]
    parts = low.split("_")
    if len(parts) >= 2 and len(parts[0]) == 3 and len(parts[1]) == 4 and parts[0].isalpha() and parts[1].isalpha():
        code = f"{parts[0]}_{parts[1].capitalize()}"
        return MACRO.get(code, code)
    return None


def task_languages(task: str, subset: str | None, lang: str | None = None) -> tuple[str, ...]:
    """The languages a task evaluates: the non-English side of a translation pair (flores200:a-b,
    opensubtitles_multi40_a_to_b), else its `{lang}` value or dataset subset, else a trailing `_xx` or `_xxx_Scri` code."""
    pair = None
    if task.startswith("flores200:"):
        pair = task.split(":", 1)[1].split("-")
    elif task.startswith("opensubtitles_multi40_"):
        pair = task.removeprefix("opensubtitles_multi40_").split("_to_")
    if pair is not None:
        sides = [canonical(p) for p in pair]
        return tuple(dict.fromkeys(s for s in sides if s and s != "eng_Latn"))
    for spelling in (lang, subset):
        code = canonical(spelling)
        if code:
            return (code,)
    m = re.search(r"_([a-z]{3}_[A-Z][a-z]{3}|[a-z]{2})$", task) if subset is None else None
    code = canonical(m.group(1)) if m else None
    return (code,) if code else ()


def check_codes(requested: list[str], valid: set[str], where: str) -> list[str]:
    """The bracket's codes, each canonical and known to the registry; a looser spelling is an error naming
    the canonical code, so a selection means one thing."""
    bad = []
    for code in requested:
        if code in valid:
            continue
        canon = canonical(code)
        bad.append(f"{code!r} (write {canon})" if canon in valid else repr(code))
    if bad:
        raise OellmError(f"{where}: unknown language code(s) {', '.join(bad)}; use the lang_Scri form, one of "
                         f"{', '.join(sorted(valid))}")
    return list(dict.fromkeys(requested))

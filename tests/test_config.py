"""The Recipe: every shipped recipe loads, overrides apply, and bad input names the key (torchtune-style)."""

import pytest

from srcal.config import Recipe, RecipeError, available_recipes, describe, load_recipe


@pytest.mark.parametrize("name", available_recipes())
def test_every_shipped_recipe_loads(name):
    r = load_recipe(name)
    assert isinstance(r, Recipe)
    assert r.name == name
    assert r.rounds == 3


def test_shipped_recipes_include_the_paper_settings():
    assert {"tiny", "llava-1.5-7b", "llava-next-8b", "qwen2.5-vl-7b"} <= set(available_recipes())


@pytest.mark.parametrize("name,rft_rank", [("llava-1.5-7b", 4), ("llava-next-8b", 32)])
def test_real_recipes_carry_the_paper_hyperparameters(name, rft_rank):
    r = load_recipe(name)
    assert r.rft.lora.r == rft_rank and r.rft.lora.alpha == 2 * rft_rank and r.rft.lr == 1e-5
    assert (r.align.lora.r, r.align.lora.alpha, r.align.lr) == (256, 512, 5e-7)
    assert (r.align.beta, r.align.sft_weight) == (0.1, 0.02)
    assert r.data.category_ratio == [2, 1, 1]
    assert (r.data.rft_size, r.data.calib_size) == (20000, 12000)


def test_dotted_overrides_are_typed_like_yaml():
    r = load_recipe("tiny", ["align.beta=0.2", "rounds=1", "search.engine=vllm", "align.lora.r=4"])
    assert r.align.beta == 0.2 and r.rounds == 1 and r.search.engine == "vllm" and r.align.lora.r == 4


def test_every_error_is_reported_at_once_with_its_key():
    with pytest.raises(RecipeError) as e:
        load_recipe("tiny", ["rounds=x", "align.bta=1", "search.engine=foo", "curate.min_margin=0.9"])
    msg = str(e.value)
    assert "rounds: expected int" in msg
    assert "align.bta: unknown key (did you mean 'beta'?)" in msg
    assert "search.engine: 'foo' is not allowed; choose one of ['hf', 'vllm']" in msg
    assert "curate.min_margin: 0.9 is above the maximum 0.5" in msg


def test_unknown_recipe_names_the_shipped_ones():
    with pytest.raises(RecipeError, match="not one of the shipped recipes"):
        load_recipe("no-such-recipe")


def test_cross_field_rules():
    with pytest.raises(RecipeError, match="search.n_candidates"):
        load_recipe("tiny", ["search.beams=1", "search.expansions=2", "search.n_candidates=5"])


def test_section_hash_tracks_only_named_sections():
    a, b = load_recipe("tiny"), load_recipe("tiny", ["align.beta=0.3"])
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("align") != b.section_hash("align")


def test_every_key_has_help_text():
    missing = [k for k, _, h in describe() if not h]
    assert not missing, f"recipe keys without help text: {missing}"


def test_overrides_index_lists_by_number():
    """Bug 5 of issue 12: `--set data.sources.0.path=…` said "'sources' is not a section", so pointing one
    source at your bucket meant restating the whole list."""
    base = load_recipe("llava-1.5-7b")
    r = load_recipe("llava-1.5-7b", ["data.sources.0.path=s3://mine/a-okvqa/", "data.sources[4].max_rows=10",
                                     "data.sources.-1.name=star", "data.category_ratio.0=3",
                                     "data.sources.1={adapter: mmstar, path: /x, category: math}"])
    assert r.data.sources[0].path == "s3://mine/a-okvqa/" and r.data.sources[0].adapter == "aokvqa"
    assert (r.data.sources[4].max_rows, r.data.sources[4].name) == (10, "star")
    assert r.data.sources[1].adapter == "mmstar" and r.data.sources[1].split == "pool"  # replaced whole
    assert r.data.sources[2:4] == base.data.sources[2:4] and r.data.category_ratio == [3, 1, 1]
    # a list the recipe does not set starts from the field's default
    t = load_recipe("tiny", ["search.sentence_delimiters.3=;", "data.category_ratio.2=5"])
    assert t.search.sentence_delimiters == [".", "?", "!", ";"] and t.data.category_ratio == [2, 1, 5]


@pytest.mark.parametrize(("override", "message"), [
    ("data.sources.5.path=x", "index 5 is out of range: data.sources has 5 entries (indices 0–4)"),
    ("data.sources.-6.path=x", "index -6 is out of range: data.sources has 5 entries"),
    ("data.sources.0.max_rows=x", "data.sources[0].max_rows: expected int, got 'x'"),
    ("data.sources.0.pth=x", "data.sources[0].pth: unknown key (did you mean 'path'?)"),
    ("data.sources.0.category=chartt", "data.sources[0].category: 'chartt' is not allowed"),
    ("data.sourcs.0.path=x", "data.sourcs: unknown key (did you mean 'sources'?)"),
    ("data.sources.path=x", "data.sources is a list; index it with a number"),
    ("rounds.0=1", "rounds is not a list, so it has no entry 0"),
    ("data.world.0=1", "data.world is not a list"),
    ("data.category_ratio.0.x=1", "data.category_ratio[0] is a single value, not a section"),
    ("rounds.x=1", "'rounds' is not a section"),     # the errors from before list indices, unchanged
    ("align.beta", "expected key=value"),
    ("align.bta=1", "align.bta: unknown key (did you mean 'beta'?)"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError) as e:
        load_recipe("llava-1.5-7b", [override])
    assert message in str(e.value)


def test_indexing_a_list_the_recipe_leaves_empty_says_so():
    with pytest.raises(RecipeError, match=r"index 0 is out of range: data.sources has 0 entries \(none\)"):
        load_recipe("tiny", ["data.sources.0.path=/x"])

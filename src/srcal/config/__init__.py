"""The recipe: its schema (:mod:`.schema`), ``--set`` overrides (:mod:`.overrides`) and loader (:mod:`.load`).

Importers use this package (``from srcal.config import load_recipe, Recipe, RecipeError``); the modules
behind it are how the code is organised, not part of the interface.
"""

from srcal.config.load import RECIPES_DIR, REMOVED_KEYS, available_recipes, load_recipe, recipe_from_dict
from srcal.config.overrides import apply_override
from srcal.config.schema import (
    AlignConfig,
    BaseTrainConfig,
    CurateConfig,
    DataConfig,
    DataSource,
    EvalConfig,
    LabellerConfig,
    LoraConfig,
    ModelConfig,
    Recipe,
    RecipeError,
    RFTConfig,
    RScorerConfig,
    ScoreConfig,
    SearchConfig,
    ShapesWorldConfig,
    TeacherConfig,
    TinyModelConfig,
    describe,
)

__all__ = [
    "RECIPES_DIR", "REMOVED_KEYS", "AlignConfig", "BaseTrainConfig", "CurateConfig", "DataConfig", "DataSource",
    "EvalConfig", "LabellerConfig", "LoraConfig", "ModelConfig", "RFTConfig", "RScorerConfig", "Recipe",
    "RecipeError", "ScoreConfig", "SearchConfig", "ShapesWorldConfig", "TeacherConfig", "TinyModelConfig",
    "apply_override", "available_recipes", "describe", "load_recipe", "recipe_from_dict",
]

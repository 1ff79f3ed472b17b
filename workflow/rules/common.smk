# Validation, paths and every input/params function of the workflow.
import json

from snakemake.utils import validate

from maetok import config as C

# The strict dataclass load names the offending key path (unknown/missing keys, types,
# enums, cross-field checks); the schema it generates is checked too, for tools that
# read the schema alone.
try:
    PARAMS = C.load_params(config)
except C.ConfigError as e:
    raise WorkflowError(f"params.yaml: {e}\n(fix the key in params.yaml or the --config/--configfile override)") from None
validate(config, schema="../schemas/params.schema.json")

SCALE = PARAMS.scale
RESULTS = f"results/{SCALE}"


def cfg_json(block):
    """A stage's merged config as the JSON string a rule passes to `maetok --config-json`.

    Rules record this string as their param, so editing one stage's (or one variant's)
    settings reruns only the jobs that read them (pipeline_tools.md §1.3).
    """
    return json.dumps(C.to_dict(block), sort_keys=True)


def final_targets():
    """What `rule all` builds; extended as stages land."""
    return [f"{RESULTS}/data"]

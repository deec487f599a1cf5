"""Parses an OpenMetrics exposition from stdin with prometheus_client's strict parser and
prints its families as JSON: [{"name", "type", "samples": [{"name", "labels", "value"}]}].
Exits non-zero, with the parser's message, on anything the format does not allow."""
import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": family.name,
        "type": family.type,
        "samples": [
            {
                "name": s.name,
                "labels": s.labels,
                "value": s.value if math.isfinite(s.value) else str(s.value),
            }
            for s in family.samples
        ],
    })
json.dump(families, sys.stdout)

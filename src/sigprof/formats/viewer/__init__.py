"""The offline flame graph page: template.html with flamegraph.css and
flamegraph.js inlined by sigprof.formats.html (package data, no network)."""

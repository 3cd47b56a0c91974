"""What the sensitivity maps say about land use: hotspot polygons and per-class statistics."""

"""Void pixels: not annotated (object borders, outside the field of view, sparse scribbles).

Prepared masks store them as the single value VOID, whatever value the source masks used
(data.ignore_index), so everything after `prepare` tests `mask == VOID`. Class ids therefore
stay below VOID. Void pixels count in no loss and no metric.
"""

VOID = 255

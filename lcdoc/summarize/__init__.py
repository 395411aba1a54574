"""`lcdoc summarize`: one summary per document, stuffed when it fits, hierarchical when it does not.

document: one document's summary; summarizers: who writes them (this process, side by side;
lcdoc.cluster for Ray); store: the cache, the Markdown files and index.md; run: the driver.
"""

from lcdoc.summarize.document import (COMBINE, PART, STYLES, Summary, digest,  # noqa: F401
                                      summarize_document, whole_sentences)
from lcdoc.summarize.run import SummarizeReport, summarize_paths  # noqa: F401
from lcdoc.summarize.store import document_title, settings_key, write_index  # noqa: F401
from lcdoc.summarize.summarizers import LocalSummarizer, Summarizer  # noqa: F401

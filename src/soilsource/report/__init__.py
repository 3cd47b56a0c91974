"""report.html: one offline file built from a run directory, with its figures.

``document`` builds the page (templates and styles in ``assets/``), ``figures`` the ROC
figures and map layers it embeds.
"""

from soilsource.report.document import write_report

__all__ = ["write_report"]

"""The study report and what a person sees: statistics, report, study page, revisions compared, pages."""

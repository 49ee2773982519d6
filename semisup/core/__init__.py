"""The foundation: user errors, atomic outputs, field rules, library versions, progress."""

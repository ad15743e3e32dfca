"""The command line, ``python -m pipeline.submit`` (or ``python -m pipeline``):

- :mod:`.parser`       the flags and the typed :class:`~.parser.Options` made from them
- :mod:`.commands`     each command, one path over a backend session; the entry point
- :mod:`.output`       what is printed, as text or ``--json``
- :mod:`.report_html`  a run's report as one self-contained HTML page
"""

"""The paper experiments, reproduced on top of the stnkit library: one module per experiment.

``table1`` (Jaderberg et al. 2015, Table 1 and cluttered MNIST), ``budget`` (the main job's
models at equal minutes of fit), ``sequence`` (Sonderby et al. 2015), ``icstn`` (Lin and
Lucey 2017), ``addition`` and ``colocalization`` (the paper's appendix), ``recipe_log`` (the
log of recipe experiments chosen on validation). ``stnkit reproduce NAME`` runs one; see
``README.md`` beside this file. The library (``stnkit``) never imports this package.
"""

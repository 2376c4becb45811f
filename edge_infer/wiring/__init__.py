"""Building the daemon from its config: which stages, how many, and what each is handed.

``stages.py`` builds them; ``app.py`` starts them in order, supervises them and stops them.
"""

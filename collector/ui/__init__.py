"""The collector's web page (served at / by api/ui.py) and the JavaScript and CSS
components it shares with the single-file HTML exports (render/html.py inlines them)."""

"""lvsd's live status page (lvsd --web): a small HTTP server and the page's own assets in static/."""

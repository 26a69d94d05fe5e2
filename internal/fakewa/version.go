package fakewa

import (
	"fmt"
	"net/http"
	"strings"

	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/store"
)

// webHost serves WhatsApp Web's page, from which clients learn the
// current version (whatsmeow.GetLatestVersion), and its chat socket.
const webHost = "web.whatsapp.com"

// versionState is what the server knows of client versions. Guarded by
// Server.mu.
type versionState struct {
	min       store.WAVersionContainer   // older is refused with 405; zero: any
	current   store.WAVersionContainer   // what WhatsApp Web's page says
	pageDown  bool                       // the page answers 503
	announced []store.WAVersionContainer // each handshake's, in order
}

// announcedVersion is the version a client's handshake payload claims:
// its user agent's app version, which is what WhatsApp judges.
func announcedVersion(p *waWa6.ClientPayload) store.WAVersionContainer {
	v := p.GetUserAgent().GetAppVersion()
	return store.WAVersionContainer{v.GetPrimary(), v.GetSecondary(), v.GetTertiary()}
}

// RequireVersion makes the server refuse, with 405 (client outdated), every
// pairing or login whose client announces a version older than min, as
// WhatsApp refuses old clients; a zero min accepts any. Connections already
// up stay; Kick to make a client log in again.
func (s *Server) RequireVersion(min store.WAVersionContainer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions.min = min
}

// SetCurrentVersion sets the version WhatsApp Web's page announces
// (whatsmeow's built-in one until set).
func (s *Server) SetCurrentVersion(v store.WAVersionContainer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions.current = v
}

// SetWebPageDown makes WhatsApp Web's page answer 503 (down) or, with
// false, serve again; the chat socket is not affected.
func (s *Server) SetWebPageDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions.pageDown = down
}

// AnnouncedVersions lists the version every client handshake announced,
// oldest first.
func (s *Server) AnnouncedVersions() []store.WAVersionContainer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.WAVersionContainer(nil), s.versions.announced...)
}

// WebPageFetches is how many times WhatsApp Web's page was asked for.
func (s *Server) WebPageFetches() int { return int(s.pageFetches.Load()) }

// outdated records the version c announced and reports whether the
// server refuses it as too old.
func (s *Server) outdated(c *conn) (store.WAVersionContainer, bool) {
	v := announcedVersion(c.payload)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions.announced = append(s.versions.announced, v)
	return v, s.refuse == "outdated" || (!s.versions.min.IsZero() && v.LessThan(s.versions.min))
}

// serveWebPage answers GET https://web.whatsapp.com/ with a page that
// holds the current version as WhatsApp Web's does ("client_revision" in
// its inline configuration). A client that does not say it is a browser
// WhatsApp Web supports gets the page asking to update the browser, with
// no version in it, as from WhatsApp Web (why GetLatestVersion poses as
// Chrome).
func (s *Server) serveWebPage(w http.ResponseWriter, r *http.Request) {
	s.pageFetches.Add(1)
	s.mu.Lock()
	cur, down := s.versions.current, s.versions.pageDown
	s.mu.Unlock()
	if down {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	ua := r.Header.Get("User-Agent")
	if !strings.Contains(ua, "Chrome/") && !strings.Contains(ua, "Firefox/") && !strings.Contains(ua, "Safari/") {
		fmt.Fprint(w, `<!DOCTYPE html><html><head><title>WhatsApp</title></head><body>`+
			`<p>WhatsApp works with Google Chrome 85+. To use WhatsApp, update Chrome or use Mozilla Firefox, Safari, Microsoft Edge or Opera.</p></body></html>`)
		return
	}
	if cur.IsZero() {
		cur = store.GetWAVersion()
	}
	fmt.Fprintf(w, `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>WhatsApp Web</title>`+
		`<script>window.__SERVER_CONFIG__={"server_revision":%d,"client_revision":%d,"hsi":"fake","push_phase":"C3"};</script>`+
		`</head><body><div id="app"></div></body></html>`, cur[2], cur[2])
}

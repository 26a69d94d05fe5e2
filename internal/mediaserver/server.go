// Package mediaserver is the media server (config `media:`): it keeps
// attachments that destinations can only show as links (IRC) under
// state_dir/media and serves them over HTTP at unguessable URLs until they
// expire.
package mediaserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebridge/phonebridge/config"
)

// Server publishes and serves media; it implements bridge.MediaPublisher.
type Server struct {
	cfg  config.Media
	base string // cfg.PublicURL without a trailing slash
	dir  string
	log  *slog.Logger
	now  func() time.Time

	ln        net.Listener
	http      *http.Server
	serveDone chan struct{}

	mu     sync.Mutex
	files  map[string]*entry
	due    expiryHeap
	timer  *time.Timer
	armed  time.Time      // when timer fires; zero when none is armed
	timers sync.WaitGroup // one per AfterFunc not yet stopped or run
	fired  atomic.Int64   // the timer's runs, for tests to count
	closed bool
}

// Start listens on cfg.Listen and serves the files kept under
// stateDir/media until Close. Files that expired while the daemon was down
// are deleted before it returns.
func Start(cfg config.Media, stateDir string, log *slog.Logger) (*Server, error) {
	return start(cfg, stateDir, log, time.Now)
}

func start(cfg config.Media, stateDir string, log *slog.Logger, now func() time.Time) (*Server, error) {
	if cfg.PublicURL == "" {
		return nil, errors.New("media.public_url is empty: the media server is off")
	}
	s := &Server{
		cfg:       cfg,
		base:      strings.TrimRight(cfg.PublicURL, "/"),
		dir:       mediaDir(stateDir),
		log:       log,
		now:       now,
		files:     map[string]*entry{},
		serveDone: make(chan struct{}),
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		s.stopTimer()
		return nil, fmt.Errorf("media.listen: %w", err)
	}
	s.ln = ln
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		// No WriteTimeout: a large file on a slow link may take long.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.serveDone)
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("media server stopped serving", "err", err)
		}
	}()
	log.Info("media server is listening", "listen", ln.Addr().String(), "public_url", s.base, "files", len(s.files))
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving, waiting within ctx for downloads in progress (those
// still running when ctx ends are cut off), and disarms the expiry timer.
// Files stay on disk for the next Start. A Publish still copying fails
// when done, leaving no file.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("media server: %w", err), s.http.Close())
	}
	<-s.serveDone
	s.stopTimer()
	return err
}

// stopTimer marks the server closed and waits out an expiry run in progress.
func (s *Server) stopTimer() {
	s.mu.Lock()
	s.closed = true
	if s.timer != nil && s.timer.Stop() {
		s.timers.Done()
	}
	s.timer, s.armed = nil, time.Time{}
	s.mu.Unlock()
	s.timers.Wait()
}

// ServeHTTP serves GET and HEAD /{id}/{name}.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	// A stored file is whatever a chat sent: it must never run as a page
	// of this origin, nor leak its secret URL as a referrer.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Robots-Tag", "noindex")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	id, name, ok := splitPath(r.URL.EscapedPath())
	if !ok {
		http.NotFound(w, r)
		return
	}
	now := s.now()
	s.mu.Lock()
	e := s.files[id]
	s.mu.Unlock()
	// The name is part of the link: a right id with a wrong name is as
	// unknown as a wrong id.
	if e == nil || e.Name != name || !now.Before(e.Expires) {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(s.dataPath(id))
	if err != nil {
		// Expired and deleted since the lookup.
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	h.Set("Content-Type", e.MIME)
	h.Set("Content-Disposition", disposition(e.MIME, e.Name))
	h.Set("ETag", `"`+id+`"`)
	// Private: chat media has no business in shared caches.
	h.Set("Cache-Control", "private, max-age="+strconv.FormatInt(int64(e.Expires.Sub(now)/time.Second), 10)+", immutable")
	h.Set("Expires", e.Expires.UTC().Format(http.TimeFormat))
	http.ServeContent(w, r, "", e.Created, f)
}

// splitPath takes "/{id}/{name}" apart: id of the form newID makes, name
// unescaped. The raw path is parsed by hand rather than by a ServeMux,
// which would redirect "..", "//" and the like instead of refusing them.
func splitPath(escaped string) (id, name string, ok bool) {
	rest, ok := strings.CutPrefix(escaped, "/")
	if !ok {
		return "", "", false
	}
	id, rawName, ok := strings.Cut(rest, "/")
	if !ok || !validID(id) || rawName == "" {
		return "", "", false
	}
	name, err := url.PathUnescape(rawName)
	if err != nil {
		return "", "", false
	}
	return id, name, true
}

// disposition shows images, audio and video in the browser and has
// everything else downloaded. SVG is an image that can carry script, so it
// is downloaded too.
func disposition(mimeType, name string) string {
	kind := "attachment"
	t, _, _ := mime.ParseMediaType(mimeType)
	media := strings.HasPrefix(t, "image/") || strings.HasPrefix(t, "audio/") || strings.HasPrefix(t, "video/")
	if media && !strings.Contains(t, "svg") && !strings.Contains(t, "xml") {
		kind = "inline"
	}
	if v := mime.FormatMediaType(kind, map[string]string{"filename": name}); v != "" {
		return v
	}
	return kind
}

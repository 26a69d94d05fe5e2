// Package webui serves the optional local web page that shows the links
// and links a phone, like WhatsApp Web's first screen: a live QR code (or a
// pairing code), then the linked account. It is off unless web.listen is
// set, and behind a token: the login form, or ?token= once, sets a cookie.
//
//	GET  /                 the page, or the login form (401) without the cookie
//	GET  /?token=T         sets the cookie and redirects to /
//	POST /login            form field token: sets the cookie, redirects to /
//	GET  /api/links        {"links": [LinkStatus + "can_link"...]}
//	GET  /api/link?link=NAME&phone=  websocket: the link stream (link.go)
package webui

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/linktext"
)

//go:embed static
var static embed.FS

var (
	loginPage = template.Must(template.ParseFS(static, "static/login.html"))
	servePage = asset("index.html", "text/html; charset=utf-8")
)

// cookieName holds the session: a MAC of the token, so the cookie is not
// the token itself and a new token ends every session.
const cookieName = "phonebridge_web"

// Server is the running web page.
type Server struct {
	admin     bridge.LinkAdmin
	log       *slog.Logger
	tokenSum  [sha256.Size]byte
	session   string
	ln        net.Listener
	srv       *http.Server
	up        websocket.Upgrader
	serveDone chan struct{}

	// base is every request's context; Close cancels it, which ends link
	// streams (hijacked, so http.Server.Shutdown does not wait for them).
	base context.Context
	stop context.CancelFunc

	// slots holds a token per running link stream. Close fills it, which
	// waits for the streams and leaves none for a late one.
	slots     chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// maxStreams bounds the link streams at once: a page cannot start
// linking without end.
const maxStreams = 8

// Start serves the link page on cfg.Listen and returns at once. With
// cfg.Listen empty the page is off: it returns a nil *Server, whose Close
// and Addr do nothing. An empty cfg.Token is generated and kept in
// stateDir/web.token.
func Start(cfg config.Web, stateDir string, admin bridge.LinkAdmin, log *slog.Logger) (*Server, error) {
	if cfg.Listen == "" {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	token, err := loadToken(cfg.Token, stateDir, log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("web.listen: %s is in use; set web.listen to a free address", cfg.Listen)
	}
	if err != nil {
		return nil, fmt.Errorf("web.listen: %w", err)
	}
	s := &Server{admin: admin, log: log, ln: ln, serveDone: make(chan struct{}), slots: make(chan struct{}, maxStreams)}
	s.tokenSum = sha256.Sum256([]byte(token))
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("phonebridge web session"))
	s.session = hex.EncodeToString(mac.Sum(nil))
	s.base, s.stop = context.WithCancel(context.Background())
	s.up = websocket.Upgrader{
		ReadBufferSize:  512,
		WriteBufferSize: 4096,
		CheckOrigin:     sameOrigin,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, status, reason.Error())
		},
	}
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.serveDone)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the web link page stopped serving", "err", err)
		}
	}()
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		log.Warn("the web link page listens beyond this machine; unless a TLS proxy is in front, the token crosses the network in clear: put it behind a TLS proxy", "listen", ln.Addr().String())
	}
	log.Info("web link page listening", "url", "http://"+ln.Addr().String()+"/")
	return s, nil
}

// Addr is where the page listens (nil when it is off).
func (s *Server) Addr() net.Addr {
	if s == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting, cancels the link streams (which cancels their
// linking) and waits for them and running requests within ctx.
func (s *Server) Close(ctx context.Context) error {
	if s == nil {
		return nil
	}
	s.closeOnce.Do(func() {
		s.stop()
		err := s.srv.Shutdown(ctx)
		<-s.serveDone
		for range maxStreams {
			select {
			case s.slots <- struct{}{}:
				continue
			case <-ctx.Done():
				err = errors.Join(err, fmt.Errorf("web link streams did not end in time: %w", ctx.Err()))
			}
			break
		}
		s.closeErr = err
	})
	return s.closeErr
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("POST /login", s.login)
	// The login form needs the stylesheet, which holds nothing secret.
	mux.HandleFunc("GET /style.css", asset("style.css", "text/css; charset=utf-8"))
	mux.Handle("GET /app.js", s.authed(asset("app.js", "text/javascript; charset=utf-8")))
	mux.Handle("GET /api/links", s.authed(http.HandlerFunc(s.links)))
	mux.Handle("GET /api/link", s.authed(http.HandlerFunc(s.handleLink)))
	return securityHeaders(mux)
}

// securityHeaders keeps the page from being framed, sniffed, cached or
// leaking its URL, and lets it load nothing but its own files: the QR
// codes are data: images.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// Not no-referrer: with it browsers send "Origin: null" on form
		// posts, which sameOrigin cannot tell from another site's.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

func asset(name, contentType string) http.HandlerFunc {
	body, err := static.ReadFile("static/" + name)
	if err != nil {
		panic(err) // embedded at build time: missing means a broken build
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Write(body)
	}
}

// validToken compares digests, so neither the time taken nor a length
// check tells anything of the token.
func (s *Server) validToken(t string) bool {
	sum := sha256.Sum256([]byte(t))
	return t != "" && subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

func (s *Server) signedIn(r *http.Request) bool {
	c, err := r.Cookie(cookieName)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.session)) == 1
}

func (s *Server) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.signedIn(r) {
			writeError(w, http.StatusUnauthorized, "sign in first: open / and enter the web token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// signIn sets the session cookie and sends the browser to the page, so
// a token in the URL leaves the address bar and the history.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    s.session,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		// Behind a TLS proxy the browser speaks https: keep the cookie there.
		Secure: r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"),
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	if t, ok := r.URL.Query()["token"]; ok {
		if len(t) == 1 && s.validToken(t[0]) {
			s.signIn(w, r)
			return
		}
		showLogin(w, http.StatusUnauthorized, "That token is wrong.")
		return
	}
	if !s.signedIn(r) {
		showLogin(w, http.StatusUnauthorized, "")
		return
	}
	servePage(w, r)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" && !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "the form was sent from another site")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if s.validToken(r.PostFormValue("token")) {
		s.signIn(w, r)
		return
	}
	showLogin(w, http.StatusUnauthorized, "That token is wrong.")
}

func showLogin(w http.ResponseWriter, status int, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	loginPage.Execute(w, struct{ Problem, TokenFile string }{problem, tokenFile})
}

// linkView is a link as the page shows it, worded here; CanLink says it
// offers Link.
type linkView struct {
	bridge.LinkStatus
	Who     string `json:"who"`    // the account in words
	Detail  string `json:"detail"` // why the link is in its state, what to do
	CanLink bool   `json:"can_link"`
}

func (s *Server) links(w http.ResponseWriter, r *http.Request) {
	views := []linkView{}
	for _, st := range s.admin.Links() {
		views = append(views, linkView{LinkStatus: st, Who: st.Account.String(), Detail: linktext.Web.Detail(st),
			CanLink: st.State == bridge.LinkUnlinked || st.State == bridge.LinkLoggedOut})
	}
	writeJSON(w, http.StatusOK, map[string][]linkView{"links": views})
}

// sameOrigin reports whether the request's Origin is the page's own
// host: a browser always sends it on websockets and form posts, so a
// foreign site cannot ride on the cookie.
func sameOrigin(r *http.Request) bool {
	u, err := url.Parse(r.Header.Get("Origin"))
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": oneLine(msg)})
}

// oneLine keeps a message one line, whatever a connector put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

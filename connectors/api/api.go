package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
)

// Connector is one api connector: an HTTP and websocket server.
type Connector struct {
	name  string
	opts  Options
	log   *slog.Logger
	store *bridge.Store
	state string // Env.StateDir

	// Set by Start.
	sink      bridge.Sink
	tokenSum  [sha256.Size]byte
	media     *mediaStore
	events    *eventLog
	hub       *hub
	upgrader  websocket.Upgrader
	srv       *http.Server
	ln        net.Listener
	serveDone chan struct{}
	stopOnce  sync.Once
}

var (
	_ bridge.Connector   = (*Connector)(nil)
	_ bridge.MediaOpener = (*Connector)(nil)
)

// New builds an api connector; nothing is opened until Start.
func New(env bridge.Env, opts *Options) (*Connector, error) {
	if opts == nil {
		opts = NewOptions()
	}
	if env.Store == nil {
		return nil, fmt.Errorf("api connector %q needs the bridge's store", env.Name)
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Connector{
		name:  env.Name,
		opts:  *opts,
		log:   log,
		store: env.Store,
		state: env.StateDir,
	}, nil
}

// Capabilities implements bridge.Connector: the API carries everything.
func (c *Connector) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{
		Edits: true, Deletes: true, Reactions: true, Replies: true, Media: true,
		Locations: true, Polls: true, HTML: true, Typing: true, Read: true, History: true,
		MaxTextLength: c.opts.MaxTextLength,
	}
}

// Addr is the address the server listens on once started (useful with
// port 0), or "".
func (c *Connector) Addr() string {
	if c.ln == nil {
		return ""
	}
	return c.ln.Addr().String()
}

// Start implements bridge.Connector: it prepares the tables, token and
// media directory and starts serving.
func (c *Connector) Start(ctx context.Context, sink bridge.Sink) error {
	if err := c.store.Migrate(ctx, "api", migrations); err != nil {
		return err
	}
	token, err := c.loadToken()
	if err != nil {
		return err
	}
	c.tokenSum = sha256.Sum256([]byte(token))
	c.media, err = newMediaStore(filepath.Join(c.state, "api-media", c.name), c.opts.MaxMediaBytes)
	if err != nil {
		return err
	}
	c.sink = sink
	c.events = &eventLog{store: c.store, connector: c.name, history: int64(c.opts.History), kept: map[string]int64{}, last: map[string]lastAppend{}}
	c.hub = newHub(c)
	c.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		// Idle clients hold no write buffer.
		WriteBufferPool: &sync.Pool{},
		// The token, not the Origin, is what authorizes: it is never a
		// cookie a foreign page could ride on.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			code := codeBadRequest
			if status == http.StatusMethodNotAllowed {
				code = codeMethodNotAllowed
			}
			writeError(w, &apiError{status, code, reason.Error()})
		},
	}

	ln, err := net.Listen("tcp", c.opts.Listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen on %s: address already in use — set connectors.%s.listen to a free address", c.opts.Listen, c.name)
		}
		return fmt.Errorf("listen on %s: %w", c.opts.Listen, err)
	}
	c.ln = ln
	c.srv = &http.Server{
		Handler:           c.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		c.log.Warn("the API listens beyond this machine without TLS; anyone who can reach it and has the token can use it", "listen", ln.Addr().String())
	}
	c.serveDone = make(chan struct{})
	go func() {
		defer close(c.serveDone)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("the API server stopped", "err", err)
			sink.SetState(bridge.StateFailed, err.Error())
		}
	}()
	sink.SetState(bridge.StateConnected, "listening on "+ln.Addr().String())
	return nil
}

// closeGrace is how long a closing websocket gets to answer our close.
const closeGrace = 5 * time.Second

// Stop implements bridge.Connector: no new connections, websocket clients
// closed with 1001, handlers waited for, all within ctx.
func (c *Connector) Stop(ctx context.Context) error {
	if c.srv == nil {
		return nil
	}
	var err error
	c.stopOnce.Do(func() {
		c.hub.stop()
		// Shutdown closes the listener and waits for plain requests;
		// it does not track websockets, which hub.wait covers.
		err = c.srv.Shutdown(ctx)
		if werr := c.hub.wait(ctx); werr != nil {
			c.hub.forceClose()
			c.srv.Close()
			err = errors.Join(err, werr)
		}
		<-c.serveDone
		c.sink.SetState(bridge.StateStopped, "")
	})
	return err
}

// loadToken returns the configured token, or the generated one kept in
// the state directory, generating it on first use.
func (c *Connector) loadToken() (string, error) {
	if c.opts.Token != "" {
		return c.opts.Token, nil
	}
	path := filepath.Join(c.state, c.name+".token")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if t := strings.TrimSpace(string(b)); len(t) >= minTokenLength {
			c.log.Info("API token read from " + path)
			return t, nil
		}
		return "", fmt.Errorf("the API token file %s is empty or too short: delete it to have a new token generated", path)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read the API token: %w", err)
	}
	if err := os.MkdirAll(c.state, 0o700); err != nil {
		return "", fmt.Errorf("create the state directory: %w", err)
	}
	token := randomHex(32)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("save the API token: %w", err)
	}
	_, werr := f.WriteString(token + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("save the API token: %w", err)
	}
	c.log.Info("API token generated; clients find it in " + path)
	return token, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

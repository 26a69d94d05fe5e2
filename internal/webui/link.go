package webui

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"rsc.io/qr"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/internal/linktext"
)

// The link stream: opening /api/link?link=NAME as a websocket starts
// linking NAME (by pairing code with &phone=). The server sends frames,
// then closes; the page cancels linking by closing the websocket.
const (
	frameQR          = "qr"           // Image: the code to scan, a PNG data URL
	framePairingCode = "pairing_code" // Code: to type on the phone
	frameInfo        = "info"         // Message: a line for the user
	frameLinked      = "linked"       // Account, and Who it is in words: the end, linked
	frameFailed      = "failed"       // Reason (a bridge.LinkFailure), Message: the end
)

// frame is what the page shows, worded here: the page is served by the
// daemon that words it, so it never reads a code it does not know.
type frame struct {
	Type    string              `json:"type"`
	Image   string              `json:"image,omitempty"`
	Code    string              `json:"code,omitempty"`
	Expires time.Time           `json:"expires,omitzero"`
	Message string              `json:"message,omitempty"`
	Account *bridge.LinkAccount `json:"account,omitempty"`
	Who     string              `json:"who,omitempty"`
	Reason  string              `json:"reason,omitempty"`
}

const (
	// writeWait bounds a frame's write, so a page that stops reading
	// cannot hold the Linker's progress callback.
	writeWait = 10 * time.Second
	// closeGrace is how long the page gets to answer our close.
	closeGrace = 2 * time.Second
	// qrScale is pixels per module: crisp on a phone's camera at 1:1.
	qrScale = 8
	// progressBuffer is how many frames may wait for a slow page.
	progressBuffer = 8
)

func (s *Server) handleLink(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "the Origin header is not this page's address; open the page at the address it is served on")
		return
	}
	name := r.URL.Query().Get("link")
	linker, ok := s.admin.Linker(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no link called %q", name))
		return
	}
	var opts bridge.LinkOptions
	if p := r.URL.Query().Get("phone"); p != "" {
		var err error
		if opts.Phone, err = control.NormalizePhone(p); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusBadRequest, "linking streams its progress: open this path as a websocket")
		return
	}
	if s.base.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, "phonebridge is stopping")
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%d links are being linked already; close another link page first", maxStreams))
		return
	}
	conn, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer conn.Close()
	how := "QR code"
	if opts.Phone != "" {
		how = "pairing code"
	}
	s.log.Info("linking from the web page", "link", name, "by", how, "from", r.RemoteAddr)
	// r.Context() derives from s.base, so Close cancels linking too.
	s.stream(r.Context(), conn, name, linker, opts)
}

// stream links name, writing its progress and outcome to the page, until
// linking ends or the page goes.
func (s *Server) stream(ctx context.Context, conn *websocket.Conn, name string, linker bridge.Linker, opts bridge.LinkOptions) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pageGone := make(chan struct{})
	go func() {
		defer close(pageGone)
		conn.SetReadLimit(512)
		// The page sends nothing; a read ends when it closes or leaves.
		for {
			if _, _, err := conn.NextReader(); err != nil {
				cancel()
				return
			}
		}
	}()

	// Only this goroutine writes to the page; the Linker's callback hands
	// it frames and never waits for a slow page: one that falls
	// progressBuffer frames behind is not watching, so linking stops.
	progress := make(chan frame, progressBuffer)
	var drawMu sync.Mutex
	var drawErr error
	var acct bridge.LinkAccount
	var linkErr error
	linked := make(chan struct{})
	svc := linker.LinkStatus().Service
	go func() {
		defer close(linked)
		acct, linkErr = linker.Link(ctx, opts, func(p bridge.LinkProgress) {
			f, err := progressFrame(svc, p)
			if err != nil {
				drawMu.Lock()
				drawErr = err
				drawMu.Unlock()
				cancel()
				return
			}
			select {
			case progress <- f:
			default:
				cancel()
			}
		})
	}()
	writing := true
	write := func(f frame) {
		if !writing {
			return
		}
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		if conn.WriteJSON(f) != nil {
			writing = false
			cancel()
		}
	}
	for done := false; !done; {
		select {
		case f := <-progress:
			write(f)
		case <-linked:
			done = true
		}
	}
	for len(progress) > 0 {
		write(<-progress)
	}
	drawMu.Lock()
	if drawErr != nil {
		linkErr = &bridge.LinkError{Reason: bridge.LinkFailed, Cause: drawErr.Error()}
	}
	drawMu.Unlock()
	last, code := s.outcome(ctx, name, acct, linkErr)
	write(last)
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(writeWait))
	// The page gets closeGrace to answer the close, unless phonebridge
	// is stopping: then its shutdown budget matters more.
	conn.SetReadDeadline(time.Now().Add(closeGrace))
	select {
	case <-pageGone:
	case <-s.base.Done():
		conn.Close()
		<-pageGone
	}
}

// outcome is the last frame of linking name, logged once.
func (s *Server) outcome(ctx context.Context, name string, acct bridge.LinkAccount, err error) (frame, int) {
	if err == nil {
		s.log.Info("linked from the web page", "link", name, "account", acct.ID)
		return frame{Type: frameLinked, Account: &acct, Who: acct.String()}, websocket.CloseNormalClosure
	}
	var le *bridge.LinkError
	code := websocket.CloseNormalClosure
	switch {
	case s.base.Err() != nil:
		le = &bridge.LinkError{Reason: bridge.LinkShuttingDown}
		code = websocket.CloseGoingAway
	case errors.As(err, &le):
	case ctx.Err() != nil:
		le = &bridge.LinkError{Reason: bridge.LinkCancelled}
	default:
		le = &bridge.LinkError{Reason: bridge.LinkFailed, Cause: err.Error()}
	}
	if le.Reason == bridge.LinkCancelled || le.Reason == bridge.LinkShuttingDown {
		s.log.Info("linking from the web page cancelled", "link", name, "reason", string(le.Reason))
	} else {
		s.log.Warn("linking from the web page failed", "link", name, "reason", string(le.Reason), "cause", oneLine(le.Cause))
	}
	return frame{Type: frameFailed, Reason: string(le.Reason), Message: "Not linked: " + linktext.Web.Failure(name, le.Service, le)}, code
}

// progressFrame turns a step of linking into what the page shows.
func progressFrame(svc string, p bridge.LinkProgress) (frame, error) {
	switch p.Kind {
	case bridge.ProgressQR:
		img, err := qrDataURL(p.QR)
		return frame{Type: frameQR, Image: img, Expires: p.Expires}, err
	case bridge.ProgressPairingCode:
		return frame{Type: framePairingCode, Code: pairingCode(p.PairingCode), Expires: p.Expires}, nil
	}
	return frame{Type: frameInfo, Message: linktext.Web.Waiting(svc, p)}, nil
}

// qrDataURL draws code as a PNG, dark on light with the 4-module quiet
// zone scanners need, for an <img src>.
func qrDataURL(code string) (string, error) {
	q, err := qr.Encode(code, qr.L)
	if err != nil {
		return "", fmt.Errorf("cannot draw the QR code: %w", err)
	}
	q.Scale = qrScale
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(q.PNG()), nil
}

// pairingCode shows WhatsApp's 8-character code as the phone asks for it.
func pairingCode(c string) string {
	if len(c) == 8 {
		return c[:4] + "-" + c[4:]
	}
	return c
}

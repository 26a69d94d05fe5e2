package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
)

// ErrNotRunning is returned, wrapped with the socket's path, when there is
// no control socket or nothing listens on it.
var ErrNotRunning = errors.New("phonebridge is not running")

// Error is an error the daemon answered with.
type Error struct {
	Status   int      // the HTTP status
	Code     string   // the error's code, such as "not_found"
	Message  string   // the one-line reason
	Problems []string // a refused config's problems
}

func (e *Error) Error() string { return e.Message }

// maxResponse bounds what the client reads of one answer.
const maxResponse = 64 << 20

// Client talks to a running daemon through its control socket.
type Client struct {
	path string
	http *http.Client
	ws   *websocket.Dialer
}

// Dial connects to the daemon whose control socket is path and checks that
// it answers.
func Dial(path string) (*Client, error) {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	c := &Client{
		path: path,
		// The zero Transport uses no proxy, which a unix socket must not.
		http: &http.Client{Transport: &http.Transport{DialContext: dial}},
		ws:   &websocket.Dialer{NetDialContext: dial, HandshakeTimeout: 10 * time.Second},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v versionBody
	if err := c.do(ctx, http.MethodGet, "/v1/version", nil, &v); err != nil {
		return nil, err
	}
	if err := checkProtocol(v); err != nil {
		return nil, err
	}
	return c, nil
}

// ErrProtocol is returned, wrapped with what to do, by Dial when the
// daemon speaks another control protocol than this client.
var ErrProtocol = errors.New("phonebridge's control protocol differs")

// checkProtocol says which side to update when the daemon's protocol is
// not ours.
func checkProtocol(v versionBody) error {
	theirs := max(v.Protocol, 1) // none: before versioning
	switch {
	case theirs < Protocol:
		return fmt.Errorf("%w: the running daemon (phonebridge %s) speaks control protocol %d and this command %d: restart the daemon so it runs the installed phonebridge (systemctl restart phonebridge)", ErrProtocol, v.Version, theirs, Protocol)
	case theirs > Protocol:
		return fmt.Errorf("%w: the running daemon (phonebridge %s) speaks control protocol %d and this command only %d: run the phonebridge command of the daemon's release", ErrProtocol, v.Version, theirs, Protocol)
	}
	return nil
}

// Version returns the daemon's version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var out versionBody
	err := c.do(ctx, http.MethodGet, "/v1/version", nil, &out)
	return out.Version, err
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (StatusReport, error) {
	var out StatusReport
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &out)
	return out, err
}

// Reload makes the daemon read its config again. A refused config is an
// *Error with Code "bad_config" and the problems in Problems.
func (c *Client) Reload(ctx context.Context) (ReloadReport, error) {
	var out ReloadReport
	err := c.do(ctx, http.MethodPost, "/v1/reload", nil, &out)
	return out, err
}

// Links returns the state of every link.
func (c *Client) Links(ctx context.Context) ([]bridge.LinkStatus, error) {
	var out struct {
		Links []bridge.LinkStatus `json:"links"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/links", nil, &out)
	return out.Links, err
}

// Chats returns the chats of the link called name whose names match
// search (all when "").
func (c *Client) Chats(ctx context.Context, name, search string) ([]bridge.ChatInfo, error) {
	var q url.Values
	if search != "" {
		q = url.Values{"search": {search}}
	}
	var out struct {
		Chats []bridge.ChatInfo `json:"chats"`
	}
	err := c.do(ctx, http.MethodGet, linkPath(name, "chats"), q, &out)
	return out.Chats, err
}

// Unlink logs the link called name out; local forgets its keys without
// telling the server.
func (c *Client) Unlink(ctx context.Context, name string, local bool) error {
	q := url.Values{"local": {fmt.Sprint(local)}}
	return c.do(ctx, http.MethodPost, linkPath(name, "unlink"), q, &struct{}{})
}

// Backfill asks the link called name for count older messages of chat
// (an id or a name); they arrive as history.
func (c *Client) Backfill(ctx context.Context, name, chat string, count int) error {
	q := url.Values{"chat": {chat}, "count": {strconv.Itoa(count)}}
	return c.do(ctx, http.MethodPost, linkPath(name, "backfill"), q, &struct{}{})
}

// Link links the link called name, calling progress (on the caller's
// goroutine) with each step. A failure is a *bridge.LinkError; cancelling
// ctx cancels the linking and returns one with Reason bridge.LinkCancelled.
func (c *Client) Link(ctx context.Context, name string, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	var none bridge.LinkAccount
	cancelled := &bridge.LinkError{Reason: bridge.LinkCancelled}
	u := "ws://phonebridge" + linkPath(name, "link")
	if opts.Phone != "" {
		u += "?" + url.Values{"phone": {opts.Phone}}.Encode()
	}
	conn, resp, err := c.ws.DialContext(ctx, u, http.Header{protocolHeader: {strconv.Itoa(Protocol)}})
	if err != nil {
		if ctx.Err() != nil {
			return none, cancelled
		}
		if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
			body, _ := io.ReadAll(resp.Body)
			return none, answerError(resp.StatusCode, body)
		}
		return none, c.connError(err)
	}
	defer conn.Close()
	conn.SetReadLimit(1 << 20)

	// Ask the daemon to stop, then wait for its last frame no longer than
	// closeGrace in case it no longer answers.
	stop := context.AfterFunc(ctx, func() {
		msg, _ := json.Marshal(frame{Type: frameCancel})
		// Only this goroutine writes data frames, so no lock is needed.
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		conn.WriteMessage(websocket.TextMessage, msg)
		conn.SetReadDeadline(time.Now().Add(writeWait + closeGrace))
	})
	defer stop()

	for {
		var f frame
		if err := conn.ReadJSON(&f); err != nil {
			if ctx.Err() != nil {
				return none, cancelled
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Text != "" {
				return none, &bridge.LinkError{Reason: bridge.LinkFailed, Cause: ce.Text}
			}
			return none, &bridge.LinkError{Reason: bridge.LinkFailed, Cause: "lost the connection to phonebridge: " + err.Error()}
		}
		switch f.Type {
		case frameProgress:
			if f.Progress != nil && progress != nil {
				progress(*f.Progress)
			}
		case frameLinked:
			closeStream(conn)
			if f.Account == nil {
				return none, &bridge.LinkError{Reason: bridge.LinkFailed, Cause: "phonebridge reported no account"}
			}
			return *f.Account, nil
		case frameFailed:
			closeStream(conn)
			if ctx.Err() != nil {
				return none, cancelled
			}
			if f.Failure == nil {
				return none, &bridge.LinkError{Reason: bridge.LinkFailed, Cause: "phonebridge reported a failure without a reason"}
			}
			return none, f.Failure.linkError()
		}
	}
}

// closeStream waits briefly for the daemon's close frame after the last
// frame so the stream ends with a clean close handshake.
func closeStream(conn *websocket.Conn) {
	conn.SetReadDeadline(time.Now().Add(closeGrace))
	for {
		if _, _, err := conn.NextReader(); err != nil {
			return
		}
	}
}

func linkPath(name, action string) string {
	return "/v1/links/" + url.PathEscape(name) + "/" + action
}

// do sends one request and decodes the JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := "http://phonebridge" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set(protocolHeader, strconv.Itoa(Protocol))
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.connError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.connError(err)
	}
	if resp.StatusCode != http.StatusOK {
		return answerError(resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("phonebridge's answer to %s could not be read: %v", path, err)
	}
	return nil
}

// answerError turns an error answer back into an error: a *bridge.LinkError
// when its code names a link failure, an *Error otherwise.
func answerError(status int, body []byte) error {
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
		return &Error{Status: status, Message: fmt.Sprintf("phonebridge answered %d %s", status, http.StatusText(status))}
	}
	if eb.Failure != nil {
		return eb.Failure.linkError()
	}
	return &Error{Status: status, Code: eb.Code, Message: eb.Error, Problems: eb.Problems}
}

// connError says, in one line, why the daemon could not be reached.
func (c *Client) connError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: there is no control socket %s", ErrNotRunning, c.path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens on %s", ErrNotRunning, c.path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cannot use the control socket %s: permission denied — run this as the user phonebridge runs as, or with sudo", c.path)
	}
	return fmt.Errorf("cannot reach phonebridge on %s: %v", c.path, err)
}

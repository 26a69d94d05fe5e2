package daemontest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WireEvent is an event as the API connector's clients see it (docs/api.md).
type WireEvent struct {
	ID             string          `json:"id,omitempty"`
	Kind           string          `json:"kind,omitempty"`
	Chat           string          `json:"chat,omitempty"`
	Sender         *WireSender     `json:"sender,omitempty"`
	Time           string          `json:"time,omitempty"`
	Text           string          `json:"text,omitempty"`
	HTML           string          `json:"html,omitempty"`
	Emote          bool            `json:"emote,omitempty"`
	Notice         bool            `json:"notice,omitempty"`
	History        bool            `json:"history,omitempty"`
	StoppedTyping  bool            `json:"stopped_typing,omitempty"`
	ReplyTo        string          `json:"reply_to,omitempty"`
	Target         string          `json:"target,omitempty"`
	TargetReaction string          `json:"target_reaction,omitempty"`
	Emoji          string          `json:"emoji,omitempty"`
	Media          []WireMedia     `json:"media,omitempty"`
	Location       *WireLocation   `json:"location,omitempty"`
	ExpiresInSec   int64           `json:"expires_in_sec,omitempty"`
	Poll           *WirePoll       `json:"poll,omitempty"`
	Vote           *WireVote       `json:"vote,omitempty"`
	Origin         json.RawMessage `json:"origin,omitempty"`
}

// WirePoll is a poll on the wire.
type WirePoll struct {
	Question string   `json:"question"`
	Options  []string `json:"options"`
	Choices  int      `json:"choices,omitempty"`
}

// WireVote is a vote on the wire: the choices going in; the poll and its
// count too coming out.
type WireVote struct {
	Choices  []int    `json:"choices"`
	Question string   `json:"question,omitempty"`
	Options  []string `json:"options,omitempty"`
	Tally    []int    `json:"tally,omitempty"`
}

// WireLocation is a shared place on the wire.
type WireLocation struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name,omitempty"`
	Address   string  `json:"address,omitempty"`
	Live      bool    `json:"live,omitempty"`
}

// WireMedia is an attachment on the wire: Data (base64) going in, URL
// coming out.
type WireMedia struct {
	MIME    string `json:"mime,omitempty"`
	Name    string `json:"name,omitempty"`
	Size    int64  `json:"size,omitempty"`
	Caption string `json:"caption,omitempty"`
	URL     string `json:"url,omitempty"`
	Data    string `json:"data,omitempty"`
	// How it is shown, its length, size, waveform and preview.
	Kind       string `json:"kind,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	Width      int    `json:"width,omitempty"`
	Height     int    `json:"height,omitempty"`
	Waveform   []int  `json:"waveform,omitempty"`
	Thumbnail  []byte `json:"thumbnail,omitempty"`
}

// WireSender is an event's sender on the wire.
type WireSender struct {
	ID      string `json:"id,omitempty"`
	Name    string `json:"name,omitempty"`
	IsOwner bool   `json:"is_owner,omitempty"`
}

// Frame is one websocket frame from the server.
type Frame struct {
	Type    string     `json:"type"`
	Ref     string     `json:"ref,omitempty"`
	ID      string     `json:"id,omitempty"`
	Chat    string     `json:"chat,omitempty"`
	Seq     int64      `json:"seq,omitempty"`
	Code    string     `json:"code,omitempty"`
	Error   string     `json:"error,omitempty"`
	Version int        `json:"version,omitempty"`
	Event   *WireEvent `json:"event,omitempty"`
}

// Client is a websocket client of the API connector.
type Client struct {
	conn    *websocket.Conn
	writeMu sync.Mutex

	// Events carries delivered events, in order.
	Events chan Frame
	// Acks carries acks and errors answering sends, in order.
	Acks chan Frame
	// Control carries subscribed and other frames.
	Control chan Frame
	// Closed is closed when the connection ends; Err says why.
	Closed chan struct{}
	err    error
}

// Dial connects to the API at addr (host:port) with token and reads the
// hello frame.
func Dial(addr, token string) (*Client, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial("ws://"+addr+"/v1/ws", h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", addr, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn.SetReadLimit(64 << 20)
	c := &Client{
		conn:    conn,
		Events:  make(chan Frame, 1<<16),
		Acks:    make(chan Frame, 1<<16),
		Control: make(chan Frame, 64),
		Closed:  make(chan struct{}),
	}
	var hello Frame
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := conn.ReadJSON(&hello); err != nil || hello.Type != "hello" {
		conn.Close()
		return nil, fmt.Errorf("no hello from %s: %v %+v", addr, err, hello)
	}
	conn.SetReadDeadline(time.Time{})
	go c.read()
	return c, nil
}

func (c *Client) read() {
	defer close(c.Closed)
	for {
		var f Frame
		if err := c.conn.ReadJSON(&f); err != nil {
			c.err = err
			return
		}
		switch f.Type {
		case "event":
			c.Events <- f
		case "ack", "error":
			c.Acks <- f
		default:
			select {
			case c.Control <- f:
			default:
			}
		}
	}
}

// Err is why the connection ended (after Closed).
func (c *Client) Err() error { return c.err }

func (c *Client) write(v any) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.conn.WriteJSON(v)
}

// Subscribe subscribes to chat, first replaying stored events after since
// (0: all of them; negative: none, only new ones), and waits for the
// server's confirmation.
func (c *Client) Subscribe(chat string, since int64) error {
	msg := map[string]any{"type": "subscribe", "chat": chat}
	if since >= 0 {
		msg["since"] = since
	}
	if err := c.write(msg); err != nil {
		return err
	}
	select {
	case f := <-c.Control:
		if f.Type != "subscribed" {
			return fmt.Errorf("subscribe %s: got %+v", chat, f)
		}
		return nil
	case <-c.Closed:
		return fmt.Errorf("subscribe %s: connection closed: %v", chat, c.err)
	case <-time.After(10 * time.Second):
		return errors.New("subscribe: no answer in 10s")
	}
}

// Send writes a send frame; its ack arrives on Acks.
func (c *Client) Send(ref string, ev WireEvent) error {
	return c.write(map[string]any{"type": "send", "ref": ref, "event": ev})
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// DialRaw connects to the API at addr like Dial and reads the hello frame,
// but leaves reading and writing to the caller: a load generator that must
// not spend the machine's CPU decoding frames it only counts.
func DialRaw(addr, token string) (*websocket.Conn, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial("ws://"+addr+"/v1/ws", h)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	var hello Frame
	if err := conn.ReadJSON(&hello); err != nil || hello.Type != "hello" {
		conn.Close()
		return nil, fmt.Errorf("no hello from %s: %v", addr, err)
	}
	return conn, nil
}

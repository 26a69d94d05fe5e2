package fakewa

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/types"
)

// conn is one client websocket: the Noise session, then binary nodes.
type conn struct {
	srv *Server
	ws  *websocket.Conn
	t   *transport

	buf        []byte
	headerSeen bool

	// Set once at the handshake.
	noisePub [32]byte
	payload  *waWa6.ClientPayload

	// Guarded by srv.mu.
	comp    *companion // the logged-in companion, nil before
	pairing *qrPairing // a registration waiting for a scan
	active  bool       // the client said <active/>: the offline queue flows
	regData *registration
	outq    *mailbox[outgoing] // stanzas in order, once active

	wmu     sync.Mutex // one writer at a time, in order
	waitMu  sync.Mutex
	waiters map[string]chan *waBinary.Node

	closeOnce sync.Once
	done      chan struct{}
}

func newConn(s *Server, ws *websocket.Conn) *conn {
	return &conn{srv: s, ws: ws, waiters: map[string]chan *waBinary.Node{}, done: make(chan struct{})}
}

// readFrame returns the next length-prefixed frame from the websocket
// stream (frames may span or share websocket messages).
func (c *conn) readFrame() ([]byte, error) {
	for {
		if !c.headerSeen && len(c.buf) >= len(socket.WAConnHeader) {
			if !bytes.Equal(c.buf[:len(socket.WAConnHeader)], socket.WAConnHeader) {
				return nil, fmt.Errorf("connection header %x is not WhatsApp's", c.buf[:4])
			}
			c.buf = c.buf[len(socket.WAConnHeader):]
			c.headerSeen = true
		}
		if c.headerSeen && len(c.buf) >= 3 {
			n := int(c.buf[0])<<16 | int(c.buf[1])<<8 | int(c.buf[2])
			if len(c.buf) >= 3+n {
				frame := append([]byte(nil), c.buf[3:3+n]...)
				c.buf = c.buf[3+n:]
				return frame, nil
			}
		}
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return nil, err
		}
		if typ != websocket.BinaryMessage {
			return nil, errors.New("text message on the chat socket")
		}
		c.buf = append(c.buf, data...)
	}
}

func (c *conn) writeFrame(data []byte) error {
	frame := make([]byte, 3+len(data))
	frame[0], frame[1], frame[2] = byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	copy(frame[3:], data)
	return c.ws.WriteMessage(websocket.BinaryMessage, frame)
}

// send encrypts and writes one node.
func (c *conn) send(n waBinary.Node) error {
	data, err := waBinary.Marshal(n)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.t == nil {
		return errors.New("no session")
	}
	c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.writeFrame(c.t.seal(data))
}

// sendIQ sends a server-initiated iq and waits for the client's answer.
func (c *conn) sendIQ(n waBinary.Node, timeout time.Duration) (*waBinary.Node, error) {
	id := n.Attrs["id"].(string)
	ch := make(chan *waBinary.Node, 1)
	c.waitMu.Lock()
	c.waiters[id] = ch
	c.waitMu.Unlock()
	defer func() {
		c.waitMu.Lock()
		delete(c.waiters, id)
		c.waitMu.Unlock()
	}()
	if err := c.send(n); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-c.done:
		return nil, errors.New("connection closed")
	case <-time.After(timeout):
		return nil, errors.New("no answer to " + n.XMLString())
	}
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.ws.Close()
	})
}

// closeAfter sends n (a stream error or failure), then closes.
func (c *conn) closeAfter(n waBinary.Node) {
	c.send(n)
	// Let the client read it before the socket goes.
	time.AfterFunc(200*time.Millisecond, c.close)
}

func (c *conn) run() {
	defer c.close()
	t, static, payload, err := serverHandshake(c, c.srv.pki)
	if err != nil {
		c.srv.logf("fakewa: handshake failed: %v", err)
		return
	}
	c.wmu.Lock()
	c.t = t
	c.wmu.Unlock()
	c.noisePub, c.payload = static, payload
	if !c.srv.accept(c) {
		return
	}
	for {
		frame, err := c.readFrame()
		if err != nil {
			return
		}
		plain, err := c.t.open(frame)
		if err != nil {
			c.srv.logf("fakewa: frame does not decrypt: %v", err)
			return
		}
		raw, err := waBinary.Unpack(plain)
		if err != nil {
			c.srv.logf("fakewa: frame does not unpack: %v", err)
			return
		}
		node, err := waBinary.Unmarshal(raw)
		if err != nil {
			c.srv.logf("fakewa: node does not decode: %v", err)
			return
		}
		c.srv.record(node)
		c.srv.lastHeard.Store(time.Now().UnixNano())
		if c.srv.isSilent() {
			continue // a network that drops everything
		}
		if node.Tag == "iq" {
			if typ, _ := node.Attrs["type"].(string); typ == "result" || typ == "error" {
				id, _ := node.Attrs["id"].(string)
				c.waitMu.Lock()
				ch := c.waiters[id]
				c.waitMu.Unlock()
				if ch != nil {
					ch <- node
					continue
				}
			}
		}
		c.srv.handle(c, node)
	}
}

// result is an empty iq result for a client's iq.
func result(iq *waBinary.Node, content ...waBinary.Node) waBinary.Node {
	n := waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"id": iq.Attrs["id"], "type": "result", "from": types.ServerJID}}
	if len(content) > 0 {
		n.Content = content
	}
	return n
}

// iqError is an iq error answer.
func iqError(iq *waBinary.Node, code int, text string) waBinary.Node {
	return waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"id": iq.Attrs["id"], "type": "error", "from": types.ServerJID},
		Content: []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": code, "text": text}}}}
}

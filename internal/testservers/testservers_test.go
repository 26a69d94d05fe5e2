package testservers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// matrix does one client API call and decodes the JSON answer into out.
func matrix(t *testing.T, hs *Dendrite, method, path, token string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, hs.URL()+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Type    string `json:"type"`
					Sender  string `json:"sender"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// messageWait bounds awaitMessage. Under a loaded CI machine, Dendrite's
// sync API once had not shown a message sent just after a restart within
// 20 s (the log was not kept); a bound only costs time when it fails.
const messageWait = 60 * time.Second

// awaitMessage long-polls /sync until body from sender shows in room.
func awaitMessage(t *testing.T, hs *Dendrite, token, room, sender, body string) {
	t.Helper()
	since := ""
	deadline := time.Now().Add(messageWait)
	for time.Now().Before(deadline) {
		q := url.Values{"timeout": {"1000"}}
		if since != "" {
			q.Set("since", since)
		}
		var s syncResp
		matrix(t, hs, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), token, nil, &s)
		for _, ev := range s.Rooms.Join[room].Timeline.Events {
			if ev.Type == "m.room.message" && ev.Sender == sender && ev.Content.Body == body {
				return
			}
		}
		since = s.NextBatch
	}
	t.Fatalf("/sync did not show %q from %s in %s within %v\ndendrite log tail:\n%s", body, sender, room, messageWait, logTail(hs.logPath(), 60))
}

func TestDendrite(t *testing.T) {
	// An appservice registration shows StartDendrite loads the files given.
	reg := filepath.Join(t.TempDir(), "registration.yaml")
	if err := os.WriteFile(reg, []byte(`id: phonebridge
url: http://127.0.0.1:9
as_token: as-token-for-tests
hs_token: hs-token-for-tests
sender_localpart: phonebridge
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@wa_.*:localhost"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	hs := StartDendrite(t, DendriteOptions{AppServiceFiles: []string{reg}})
	t.Logf("dendrite ready in %v at %s", time.Since(start), hs.URL())

	alice, aliceTok := hs.Register(t, "alice", "alice-password", true)
	bob, bobTok := hs.Register(t, "bob", "bob-password", false)
	if alice != "@alice:localhost" || bob != "@bob:localhost" {
		t.Fatalf("user ids %q, %q; want @alice:localhost, @bob:localhost", alice, bob)
	}

	var room struct {
		RoomID string `json:"room_id"`
	}
	matrix(t, hs, http.MethodPost, "/_matrix/client/v3/createRoom", aliceTok,
		map[string]any{"preset": "private_chat", "invite": []string{bob}}, &room)
	matrix(t, hs, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(room.RoomID), bobTok, map[string]any{}, nil)
	matrix(t, hs, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(room.RoomID)+"/send/m.room.message/txn1", aliceTok,
		map[string]any{"msgtype": "m.text", "body": "hello bob"}, nil)
	awaitMessage(t, hs, bobTok, room.RoomID, alice, "hello bob")

	var who struct {
		UserID string `json:"user_id"`
	}
	matrix(t, hs, http.MethodGet, "/_matrix/client/v3/account/whoami", "as-token-for-tests", nil, &who)
	if who.UserID != "@phonebridge:localhost" {
		t.Fatalf("appservice whoami = %q, want @phonebridge:localhost", who.UserID)
	}

	// A restart (SIGTERM, then start on the same directory and port) keeps
	// rooms, tokens and the URL, and the server takes and shows new events.
	start = time.Now()
	hs.Restart(t)
	t.Logf("dendrite restarted in %v", time.Since(start))
	matrix(t, hs, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(room.RoomID)+"/send/m.room.message/txn2", aliceTok,
		map[string]any{"msgtype": "m.text", "body": "after restart"}, nil)
	awaitMessage(t, hs, bobTok, room.RoomID, alice, "after restart")

	// After a SIGKILL it starts again with its data and tokens. Events are
	// not checked: Dendrite 0.13.8's embedded NATS can lose its output
	// stream on a SIGKILL ("ack floor 9 is ahead of stream's last sequence
	// 0" in its log) and its sync API then skips the room's next events;
	// seen here 3 runs in about 120 under load.
	hs.Kill()
	start = time.Now()
	hs.Restart(t)
	t.Logf("dendrite restarted after SIGKILL in %v", time.Since(start))
	who.UserID = ""
	matrix(t, hs, http.MethodGet, "/_matrix/client/v3/account/whoami", aliceTok, nil, &who)
	if who.UserID != alice {
		t.Fatalf("whoami after restart = %q, want %s", who.UserID, alice)
	}
}

// ircClient is a raw IRC client that answers PINGs while it reads.
type ircClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialIRC(t *testing.T, addr, nick string) *ircClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &ircClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.send("NICK " + nick)
	c.send("USER " + nick + " 0 * :" + nick)
	c.await(func(f []string) bool { return len(f) > 1 && f[1] == "001" })
	return c
}

func (c *ircClient) send(line string) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// await reads lines until match accepts one's fields, within 10 s.
func (c *ircClient) await(match func(fields []string) bool) string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == "PING" {
			c.send("PONG " + f[1])
			continue
		}
		if match(f) {
			return line
		}
	}
}

func (c *ircClient) join(channel string) {
	c.t.Helper()
	c.send("JOIN " + channel)
	// 366 ends the names list, sent once the join is complete.
	c.await(func(f []string) bool { return len(f) > 3 && f[1] == "366" && f[3] == channel })
}

func TestNgircd(t *testing.T) {
	start := time.Now()
	irc := StartNgircd(t, NgircdOptions{})
	t.Logf("ngircd ready in %v at %s", time.Since(start), irc.Addr())

	exchange := func(suffix string) {
		a := dialIRC(t, irc.Addr(), "alice_with_a_long_nick"+suffix)
		b := dialIRC(t, irc.Addr(), "bob"+suffix)
		a.join("#test")
		b.join("#test")
		a.send("PRIVMSG #test :hello from alice")
		line := b.await(func(f []string) bool { return len(f) > 2 && f[1] == "PRIVMSG" })
		want := ":alice_with_a_long_nick" + suffix + "!"
		if !strings.HasPrefix(line, want) || !strings.HasSuffix(line, "PRIVMSG #test :hello from alice") {
			t.Fatalf("bob got %q, want a PRIVMSG to #test from %s...", line, want)
		}
	}
	exchange("")

	irc.Kill()
	start = time.Now()
	irc.Restart(t)
	t.Logf("ngircd restarted in %v", time.Since(start))
	exchange("2")
}

// TestInspIRCd: the server runs (as irc when the tests are root), offers
// the IRCv3 capabilities ngIRCd lacks, relays between two clients, echoes
// a message back to its sender once asked to, and comes back after a
// SIGKILL on the same port.
func TestInspIRCd(t *testing.T) {
	start := time.Now()
	irc := StartInspIRCd(t, InspIRCdOptions{})
	t.Logf("inspircd ready in %v at %s", time.Since(start), irc.Addr())

	// What it offers, before registering.
	conn, err := net.DialTimeout("tcp", irc.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &ircClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.send("CAP LS 302")
	var caps string
	for {
		line := c.await(func(f []string) bool { return len(f) > 2 && f[1] == "CAP" })
		caps += " " + line
		if f := strings.Fields(line); len(f) > 3 && f[3] != "*" {
			break // the last line of the list
		}
	}
	conn.Close()
	for _, want := range []string{"echo-message", "labeled-response", "batch", "message-tags"} {
		if !strings.Contains(caps, want) {
			t.Errorf("CAP LS does not offer %s: %s", want, caps)
		}
	}

	exchange := func(suffix string) {
		a := dialIRC(t, irc.Addr(), "alice"+suffix)
		b := dialIRC(t, irc.Addr(), "bob"+suffix)
		a.send("CAP REQ :echo-message")
		a.await(func(f []string) bool { return len(f) > 3 && f[1] == "CAP" && f[3] == "ACK" })
		a.join("#test")
		b.join("#test")
		a.send("PRIVMSG #test :hello from alice")
		line := b.await(func(f []string) bool { return len(f) > 2 && f[1] == "PRIVMSG" })
		if !strings.HasPrefix(line, ":alice"+suffix+"!") || !strings.HasSuffix(line, "PRIVMSG #test :hello from alice") {
			t.Fatalf("bob got %q, want alice's PRIVMSG to #test", line)
		}
		if echo := a.await(func(f []string) bool { return len(f) > 2 && f[1] == "PRIVMSG" }); !strings.HasSuffix(echo, ":hello from alice") {
			t.Fatalf("alice's echo is %q", echo)
		}
	}
	exchange("")

	irc.Kill()
	start = time.Now()
	irc.Restart(t)
	t.Logf("inspircd restarted in %v", time.Since(start))
	exchange("2")
}

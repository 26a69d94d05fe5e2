package daemontest

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/internal/testservers"
)

// IRCPerson is someone in an IRC channel, on a raw connection that
// answers PINGs and queues every other line.
type IRCPerson struct {
	conn  net.Conn
	lines chan string
}

// DialIRC registers nick on the IRC server at addr and joins channel.
func DialIRC(t testing.TB, addr, nick, channel string) *IRCPerson {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &IRCPerson{conn: conn, lines: make(chan string, 1<<16)}
	go func() {
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "PING ") {
				fmt.Fprintf(conn, "PONG %s\r\n", strings.TrimPrefix(line, "PING "))
				continue
			}
			p.lines <- line
		}
		close(p.lines)
	}()
	fmt.Fprintf(conn, "NICK %s\r\nUSER %s 0 * :%s\r\n", nick, nick, nick)
	p.Await(t, func(line string) bool { return strings.Contains(line, " 001 ") })
	fmt.Fprintf(conn, "JOIN %s\r\n", channel)
	p.Await(t, func(line string) bool { return strings.Contains(line, " JOIN ") })
	return p
}

// Lines are the lines the person receives (PINGs answered and left
// out), closed when the connection ends. Await reads them too.
func (p *IRCPerson) Lines() <-chan string { return p.lines }

// Send writes a raw line as the person.
func (p *IRCPerson) Send(line string) { fmt.Fprintf(p.conn, "%s\r\n", line) }

// Await returns the next line match takes, skipping others; it fails
// the test after five minutes.
func (p *IRCPerson) Await(t testing.TB, match func(line string) bool) string {
	t.Helper()
	timeout := time.After(5 * time.Minute)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatal("the IRC connection closed")
			}
			if match(line) {
				return line
			}
		case <-timeout:
			t.Fatal("no such IRC line within 5 minutes")
		}
	}
}

// MatrixRoom is a public room Ann made on a test homeserver, and a
// second account for the bridge to use in bot mode.
type MatrixRoom struct {
	Ann      *mautrix.Client
	Room     id.RoomID
	BotID    id.UserID
	BotToken string
}

// NewMatrixRoom registers Ann and the bridge's account on hs, and has Ann
// make a public room.
func NewMatrixRoom(t testing.TB, hs *testservers.Dendrite) *MatrixRoom {
	t.Helper()
	annID, annToken := hs.Register(t, "ann", "ann-password-1", false)
	botID, botToken := hs.Register(t, "bridge", "bridge-password-1", false)
	ann, err := mautrix.NewClient(hs.URL(), id.UserID(annID), annToken)
	if err != nil {
		t.Fatal(err)
	}
	created, err := ann.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "General"})
	if err != nil {
		t.Fatal(err)
	}
	return &MatrixRoom{Ann: ann, Room: created.RoomID, BotID: id.UserID(botID), BotToken: botToken}
}

// BotConnector is the config section of a bot-mode matrix connector
// called name on hs for this room, indented for `connectors:`.
func (m *MatrixRoom) BotConnector(name string, hs *testservers.Dendrite) string {
	return fmt.Sprintf("  %s:\n    type: matrix\n    mode: bot\n    homeserver: %s\n    domain: localhost\n    user_id: \"%s\"\n    access_token: %s\n",
		name, hs.URL(), m.BotID, m.BotToken)
}

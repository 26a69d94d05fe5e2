package fakewa

import (
	"fmt"
	"slices"
	"testing"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// A contact's typing reaches a linked device only while it is available
// on its connection, as on WhatsApp: before it says so, after it says
// unavailable, and after it reconnects, the chat state is withheld.
func TestChatStateOnlyWhileAvailable(t *testing.T) {
	for _, lid := range []bool{false, true} {
		t.Run(map[bool]string{false: "pn", true: "lid"}[lid], func(t *testing.T) {
			srv := newServer(t, Options{LIDAddressing: lid})
			alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
			bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
			g := srv.NewGroup("120363000000000001", "Test group", alice, bob)
			cl := link(t, srv, alice)
			dev := cl.Store.GetJID()
			ctx := ctxT(t)
			cl.Store.PushName = "Alice" // whatsmeow announces a presence only with a name

			// withheld checks that a chat state sent now reaches no device:
			// a message sent after it arrives with no chat state before.
			withheld := func(when string) {
				t.Helper()
				before := len(cl.events.all())
				if n, err := bob.SendChatState(alice.PN, types.ChatPresenceComposing); err != nil || n != 0 {
					t.Fatalf("%s: Bob's typing reached %d devices (%v), want none", when, n, err)
				}
				id, _ := bob.SendText(ctx, alice.PN, "after typing "+when)
				waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == id })
				for _, e := range cl.events.all()[before:] {
					if cp, ok := e.(*events.ChatPresence); ok {
						t.Fatalf("%s: the device saw %+v", when, cp)
					}
				}
			}
			withheld("before a presence")

			if err := cl.SendPresence(ctx, types.PresenceAvailable); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "available", func() bool { return srv.PresenceOf(dev) == "available" })
			if n, err := bob.SendChatState(alice.PN, types.ChatPresenceComposing); err != nil || n != 1 {
				t.Fatalf("Bob's typing reached %d devices (%v), want 1", n, err)
			}
			cp := waitEvent[*events.ChatPresence](t, cl, nil)
			if cp.State != types.ChatPresenceComposing || cp.IsGroup || cp.Sender.User != peerJID(bob, lid).User || cp.Chat.User != bob.PN.User && cp.Chat.User != bob.LID.User {
				t.Errorf("Bob's typing came as %+v", cp)
			}
			if lid && cp.SenderAlt.User != bob.PN.User {
				t.Errorf("Bob's typing by LID came without his number beside: %+v", cp.MessageSource)
			}
			if n, _ := bob.SendChatState(g.JID, types.ChatPresencePaused); n != 1 {
				t.Fatalf("Bob's paused in the group reached %d devices, want 1", n)
			}
			gp := waitEvent[*events.ChatPresence](t, cl, func(e *events.ChatPresence) bool { return e.IsGroup })
			if gp.State != types.ChatPresencePaused || gp.Chat != g.JID || gp.Sender.User != srv.addressOf(g, bob).User {
				t.Errorf("Bob's group chat state came as %+v", gp)
			}

			if err := cl.SendPresence(ctx, types.PresenceUnavailable); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "unavailable", func() bool { return srv.PresenceOf(dev) == "unavailable" })
			withheld("after unavailable")

			if err := cl.SendPresence(ctx, types.PresenceAvailable); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "available again", func() bool { return srv.PresenceOf(dev) == "available" })
			connected := len(cl.events.all())
			cl.Disconnect()
			if err := cl.Connect(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "connected again", func() bool {
				return slices.ContainsFunc(cl.events.all()[connected:], func(e any) bool { _, ok := e.(*events.Connected); return ok })
			})
			withheld("after reconnecting")
			if p := srv.PresenceOf(dev); p != "" {
				t.Errorf("after reconnecting the device's presence is %q, want none", p)
			}
			// A stranger to the group, and someone not on WhatsApp, cannot type there.
			if _, err := srv.NewPhone("15550009999", "100000000000009", "Zed").SendChatState(g.JID, types.ChatPresenceComposing); err == nil {
				t.Error("a non-member's typing in the group was taken")
			}
			if _, err := bob.SendChatState(types.NewJID("15550000000", types.DefaultUserServer), types.ChatPresenceComposing); err == nil {
				t.Error("typing to someone not on WhatsApp was taken")
			}
		})
	}
}

// A contact reading the device's messages sends it read receipts (one per
// chat, the ids listed), in a chat and in a group; the owner reading on
// her phone tells her devices too; only messages the phone got from others
// can be read.
func TestPhoneReads(t *testing.T) {
	for _, lid := range []bool{false, true} {
		t.Run(map[bool]string{false: "pn", true: "lid"}[lid], func(t *testing.T) {
			srv := newServer(t, Options{LIDAddressing: lid})
			alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
			bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
			g := srv.NewGroup("120363000000000001", "Test group", alice, bob)
			cl := link(t, srv, alice)
			ctx := ctxT(t)
			var ids []string
			for i := range 2 {
				resp, err := cl.SendMessage(ctx, bob.PN, &waE2E.Message{Conversation: proto.String(fmt.Sprint("read me ", i))})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, resp.ID)
			}
			gresp, err := cl.SendMessage(ctx, g.JID, &waE2E.Message{Conversation: proto.String("read me in the group")})
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range append(ids, gresp.ID) {
				if _, err := bob.WaitMessage(ctx, func(m Message) bool { return m.ID == id }); err != nil {
					t.Fatal(err)
				}
			}
			if err := bob.Read(append(ids, gresp.ID)...); err != nil {
				t.Fatal(err)
			}
			read := func(e *events.Receipt) bool { return e.Type == types.ReceiptTypeRead }
			r := waitEvent[*events.Receipt](t, cl, func(e *events.Receipt) bool { return read(e) && !e.IsGroup })
			if !slices.Equal(r.MessageIDs, ids) || r.IsFromMe || r.Sender.User != peerJID(bob, lid).User || r.Chat.User != peerJID(bob, lid).User {
				t.Errorf("Bob's read receipt came as %+v, want his read of %v", r, ids)
			}
			gr := waitEvent[*events.Receipt](t, cl, func(e *events.Receipt) bool { return read(e) && e.IsGroup })
			if !slices.Equal(gr.MessageIDs, []string{gresp.ID}) || gr.IsFromMe || gr.Chat != g.JID || gr.Sender.User != srv.addressOf(g, bob).User {
				t.Errorf("Bob's group read receipt came as %+v", gr)
			}
			waitFor(t, "the receipts acknowledged", func() bool { return srv.Pending(cl.Store.GetJID()) == 0 })

			// Alice reads Bob's message on her phone: her device hears it.
			id, _ := bob.SendText(ctx, alice.PN, "for alice")
			waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == id })
			if _, err := alice.WaitMessage(ctx, func(m Message) bool { return m.ID == id }); err != nil {
				t.Fatal(err)
			}
			if err := alice.Read(id); err != nil {
				t.Fatal(err)
			}
			own := waitEvent[*events.Receipt](t, cl, func(e *events.Receipt) bool { return read(e) && e.IsFromMe })
			if !slices.Equal(own.MessageIDs, []string{id}) || own.Chat.User != peerJID(bob, lid).User {
				t.Errorf("Alice's own read receipt came as %+v", own)
			}

			if err := bob.Read("NOSUCH"); err == nil {
				t.Error("reading an unknown message was taken")
			}
			if err := alice.Read(ids[0]); err == nil {
				t.Error("Alice reading her own device's message was taken")
			}
		})
	}
}

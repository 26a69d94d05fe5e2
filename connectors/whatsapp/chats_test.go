package whatsapp

// Chats and names on the wire: the account's contacts come from the
// phone's app state and people's push names, its groups from WhatsApp's
// group list and notifications, as internal/fakewa serves them.

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// chatsWorld is a linked world with more to list: Alice in Ann's address
// book (who calls herself Ali), someone without a push name, and groups
// Work, two called Team, and Cousins.
type chatsWorld struct {
	*linkedWorld
	alice, nameless             *fakewa.Phone
	work, teamA, teamB, cousins *fakewa.Group
}

func newChatsWorld(t *testing.T, wopts fakewa.Options) *chatsWorld {
	t.Helper()
	cw := &chatsWorld{}
	cw.linkedWorld = newLinkedWorldWith(t, wopts, nil, func(w *waWorld) {
		cw.alice = w.srv.NewPhone("15550004444", "100000000000004", "Ali")
		cw.nameless = w.srv.NewPhone("15550008888", "100000000000008", "")
		cw.work = w.srv.NewGroup("120363000000000002", "Work", w.ann, w.bob)
		cw.teamA = w.srv.NewGroup("120363000000000003", "Team", w.ann, w.eve)
		cw.teamB = w.srv.NewGroup("120363000000000004", "Team", w.ann, w.bob)
		cw.cousins = w.srv.NewGroup("120363000000000005", "Cousins", w.ann, w.eve, cw.nameless)
		ctx := context.Background()
		if err := w.ann.SetContact(ctx, cw.alice.PN, "Alice Smith", "Alice"); err != nil {
			t.Fatal(err)
		}
		if err := w.ann.SetPushName(ctx, "Ann"); err != nil {
			t.Fatal(err)
		}
	})
	waitChatsLoaded(t, cw.c, cw.s)
	waitUntil(t, "the account's name", func() bool { return cw.c.LinkStatus().Account.Name == "Ann" })
	waitUntil(t, "Alice in the contacts", func() bool {
		// Through the connector's list: whatsmeow's GetContact copies its
		// cached entry after letting go of the lock the sync writes under.
		chats, err := cw.c.Chats(context.Background(), "Alice Smith")
		return err == nil && len(chats) == 1 && chats[0].ID == cw.alice.PN.String()
	})
	return cw
}

// waitChatsLoaded waits until the link has loaded its groups from WhatsApp.
func waitChatsLoaded(t *testing.T, c *Connector, s *recSink) {
	t.Helper()
	s.waitFor(t, "ChatsChanged after loading the groups", func() bool { return s.chatsChg > 0 })
	waitUntil(t, "the groups loaded", func() bool {
		c.chats.mu.Lock()
		defer c.chats.mu.Unlock()
		return c.chats.loaded
	})
}

func chatIDs(chats []bridge.ChatInfo) []string {
	var ids []string
	for _, ch := range chats {
		ids = append(ids, ch.ID)
	}
	return ids
}

// TestChats lists and searches the account's chats, names them in events
// and mentions, and resolves route names, as WhatsApp has them.
func TestChats(t *testing.T) {
	cw := newChatsWorld(t, fakewa.Options{})
	ctx := context.Background()
	ann, family := cw.ann.PN, cw.family.JID
	cw.says(t, cw.bob, ann, "hi, I am Bob") // his push name comes with it

	t.Run("list and search", func(t *testing.T) {
		all, err := cw.c.Chats(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []bridge.ChatInfo{
			{ID: cw.alice.PN.String(), Name: "Alice Smith"},
			{ID: bobChat, Name: "Bob"},
			{ID: family.String(), Name: "Family", Group: true},
			{ID: cw.teamA.JID.String(), Name: "Team", Group: true},
			{ID: cw.teamB.JID.String(), Name: "Team", Group: true},
			{ID: cw.work.JID.String(), Name: "Work", Group: true},
		} {
			if !slices.Contains(all, want) {
				t.Errorf("Chats lists %+v, want %+v among them", all, want)
			}
		}
		if !slices.IsSortedFunc(all, func(a, b bridge.ChatInfo) int {
			return strings.Compare(a.Name+"\x00"+a.ID, b.Name+"\x00"+b.ID)
		}) {
			t.Errorf("Chats lists %+v, want them by name", all)
		}
		for search, ids := range map[string][]string{
			"fam":     {family.String()},
			"TEAM":    {cw.teamA.JID.String(), cw.teamB.JID.String()},
			"5550002": {bobChat}, // by number
			"@g.us":   {cw.cousins.JID.String(), family.String(), cw.teamA.JID.String(), cw.teamB.JID.String(), cw.work.JID.String()},
			"nobody":  nil,
		} {
			got, err := cw.c.Chats(ctx, search)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(chatIDs(got), ids) {
				t.Errorf("Chats(%q) = %v, want %v", search, chatIDs(got), ids)
			}
		}
	})

	t.Run("renamed", func(t *testing.T) {
		evs := cw.watch()
		cw.work.SetSubject(cw.srv, cw.bob, "Office")
		evs.wait(t, "the rename", func(e any) bool { return isGroupInfo(e, cw.work.JID) })
		if got, _ := cw.c.Chats(ctx, "office"); len(got) != 1 || got[0].ID != cw.work.JID.String() {
			t.Errorf("after the rename Chats(office) = %+v", got)
		}
	})

	t.Run("joined", func(t *testing.T) {
		club := cw.srv.NewGroup("120363000000000099", "Book club", cw.bob)
		evs := cw.watch()
		club.AddMembers(cw.srv, cw.bob, cw.ann)
		evs.wait(t, "joining", func(e any) bool { return isJoined(e, club.JID) })
		if got, _ := cw.c.Chats(ctx, "book"); len(got) != 1 || got[0].ID != club.JID.String() || !got[0].Group {
			t.Errorf("after joining Chats(book) = %+v", got)
		}
	})

	t.Run("resolve", func(t *testing.T) {
		for in, want := range map[string]string{
			"Family":                       family.String(),
			"Alice Smith":                  cw.alice.PN.String(),
			bobChat:                        bobChat,
			"15550002222:7@s.whatsapp.net": bobChat, // a device's JID names the person's chat
			family.String():                family.String(),
			"120363999999999999@g.us":      "120363999999999999@g.us", // an id is not looked up
		} {
			if got, err := cw.c.ResolveChat(ctx, in); err != nil || got != want {
				t.Errorf("ResolveChat(%q) = %q, %v; want %q", in, got, err, want)
			}
		}
		for in, says := range map[string][]string{
			"Team":            {"2 WhatsApp chats", cw.teamA.JID.String(), cw.teamB.JID.String(), "use the chat id"},
			"Nobody":          {`is called "Nobody"`, "phonebridge chats me --search"},
			"family":          {`is called "family"`}, // names match exactly
			"@s.whatsapp.net": {"is not a WhatsApp chat id"},
		} {
			_, err := cw.c.ResolveChat(ctx, in)
			if err == nil || errors.Is(err, bridge.ErrChatListUnavailable) {
				t.Errorf("ResolveChat(%q): %v, want an error", in, err)
				continue
			}
			for _, s := range says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("ResolveChat(%q): %q does not say %q", in, err, s)
				}
			}
		}
	})

	// Relayed events carry the chat's and the sender's names: from the
	// address book (before the push name), push names, the group's
	// subject, else the number; the owner by the account's name.
	t.Run("event names", func(t *testing.T) {
		for _, tc := range []struct {
			from                 *fakewa.Phone
			chat                 types.JID
			chatName, senderName string
		}{
			{cw.alice, ann, "Alice Smith", "Alice Smith"},
			{cw.eve, family, "Family", "Eve"},
			{cw.nameless, cw.cousins.JID, "Cousins", "+15550008888"},
			{cw.ann, cw.bob.PN, "Bob", "Ann"},
		} {
			ev := cw.says(t, tc.from, tc.chat, "hello")
			if ev.Chat.Name != tc.chatName || ev.Sender.Name != tc.senderName || ev.Sender.IsOwner != (tc.from == cw.ann) {
				t.Errorf("a message from %s in %s: chat %q, sender %+v; want chat %q, sender %q", tc.from.PN, tc.chat, ev.Chat.Name, ev.Sender, tc.chatName, tc.senderName)
			}
		}
	})

	// A mention shows as the person's name: WhatsApp writes "@" and a
	// number, which means nothing on other platforms.
	t.Run("mentions", func(t *testing.T) {
		ev := cw.fromPhone(t, cw.bob, family, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
			Text: proto.String("hi @15550004444 and @155500044449, ask @15550009999 *now*, @" + cw.ann.PN.User),
			ContextInfo: &waE2E.ContextInfo{MentionedJID: []string{
				cw.alice.PN.String(), "15550009999@s.whatsapp.net", // the second is no one Ann knows
				cw.ann.PN.String(), cw.eve.PN.String(), // the owner; and Eve, mentioned but not in the text
			}},
		}})
		if want := "hi @Alice Smith and @155500044449, ask @15550009999 *now*, @Ann"; ev.Text != want {
			t.Errorf("text %q, want %q", ev.Text, want)
		}
		// Destinations learn whom each names, the owner as the owner.
		want := []bridge.Mention{
			{ID: cw.alice.PN.String(), Name: "Alice Smith", Text: "@Alice Smith"},
			{ID: "15550009999@s.whatsapp.net", Name: "+15550009999", Text: "@15550009999"},
			{Owner: true, Name: "Ann", Text: "@Ann"},
		}
		if !reflect.DeepEqual(ev.Mentions, want) {
			t.Errorf("mentions %+v, want %+v", ev.Mentions, want)
		}
		if !strings.Contains(ev.HTML, "@Alice Smith") || !strings.Contains(ev.HTML, "<b>now</b>") {
			t.Errorf("html %q, want the name and the formatting", ev.HTML)
		}
	})

	// A group change the owner made from the phone is marked as the
	// owner's, whether the group names her by phone number or by LID;
	// someone else's is not.
	t.Run("group notices by the owner", func(t *testing.T) {
		lidGroup := cw.srv.NewGroup("120363000000000006", "By LID", cw.ann, cw.eve)
		lidGroup.LIDAddressing = true
		for i, tc := range []struct {
			g  *fakewa.Group
			by *fakewa.Phone
		}{{cw.cousins, cw.ann}, {lidGroup, cw.ann}, {cw.cousins, cw.eve}} {
			name := fmt.Sprintf("renamed %d", i)
			tc.g.SetSubject(cw.srv, tc.by, name)
			ev := cw.s.waitEvent(t, "the rename notice", func(ev bridge.Event) bool { return strings.Contains(ev.Text, name) })
			if ev.Sender.IsOwner != (tc.by == cw.ann) || ev.Chat.ID != tc.g.JID.String() {
				t.Errorf("%s renaming %s: relayed in %s from %+v, want the owner's: %v", tc.by.PushName, tc.g.Subject, ev.Chat.ID, ev.Sender, tc.by == cw.ann)
			}
		}
	})

	// Last: it stops the link. The group names are kept: after a restart
	// they resolve before connecting. Without them (a link from before
	// they were kept), a name that may be a group waits for the list,
	// while known contacts resolve at once.
	t.Run("after a restart", func(t *testing.T) {
		flushStore(t, cw.r.store)
		stopWithin(t, cw.c)
		again := cw.r.openOnFake(cw.waWorld, "me", nil)
		if id, err := again.ResolveChat(ctx, "Family"); err != nil || id != family.String() {
			t.Errorf("after a restart, ResolveChat(Family) = %q, %v", id, err)
		}
		stopWithin(t, again)

		if err := cw.r.store.Write(ctx, func(tx *bridge.Tx) error {
			_, err := tx.Exec(`DELETE FROM whatsapp_chats`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		fresh := cw.r.openOnFake(cw.waWorld, "me", nil)
		if id, err := fresh.ResolveChat(ctx, "Alice Smith"); err != nil || id != cw.alice.PN.String() {
			t.Errorf("ResolveChat(Alice Smith) before loading = %q, %v", id, err)
		}
		if _, err := fresh.ResolveChat(ctx, "Family"); !errors.Is(err, bridge.ErrChatListUnavailable) {
			t.Errorf("ResolveChat(Family) before loading: %v, want it to wrap ErrChatListUnavailable", err)
		}
		s := cw.r.start(fresh)
		waitChatsLoaded(t, fresh, s)
		if id, err := fresh.ResolveChat(ctx, "Family"); err != nil || id != family.String() {
			t.Errorf("once connected, ResolveChat(Family) = %q, %v", id, err)
		}
	})
}

// isGroupInfo reports whether e is a change to group g.
func isGroupInfo(e any, g types.JID) bool {
	gi, ok := e.(*events.GroupInfo)
	return ok && gi.JID == g
}

// isJoined reports whether e says the account joined group g.
func isJoined(e any, g types.JID) bool {
	j, ok := e.(*events.JoinedGroup)
	return ok && j.JID == g
}

func TestResolveChatUnlinked(t *testing.T) {
	w := newWAWorld(t, fakewa.Options{})
	c := newRig(t).openOnFake(w, "me", nil)
	if _, err := c.ResolveChat(context.Background(), "Family"); !errors.Is(err, bridge.ErrChatListUnavailable) || !strings.Contains(err.Error(), "not linked") {
		t.Errorf("ResolveChat on an unlinked link: %v, want it to say so and wrap ErrChatListUnavailable", err)
	}
	if id, err := c.ResolveChat(context.Background(), familyGroup); err != nil || id != familyGroup {
		t.Errorf("an id on an unlinked link: %q, %v", id, err)
	}
	if _, err := c.Chats(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "phonebridge link me") {
		t.Errorf("Chats on an unlinked link: %v, want it to say to link", err)
	}
}

// TestChatsForgottenOnUnlink: after unlinking and linking another account,
// the first account's chats are gone.
func TestChatsForgottenOnUnlink(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	waitChatsLoaded(t, lw.c, lw.s)
	if err := lw.c.Unlink(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	dan := lw.srv.NewPhone("15550007777", "100000000000007", "Dan")
	lw.srv.NewGroup("120363000000000070", "Dan's club", dan)
	lw.s.mu.Lock()
	changes := lw.s.chatsChg
	lw.s.mu.Unlock()
	linkByQR(t, lw.c, dan)
	lw.s.waitFor(t, "Dan's groups", func() bool { return lw.s.chatsChg > changes })
	waitUntil(t, "Dan's groups loaded", func() bool {
		got, _ := lw.c.Chats(context.Background(), "club")
		return len(got) == 1
	})
	chats, err := lw.c.Chats(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chats {
		if ch.ID == familyGroup || ch.ID == bobChat {
			t.Errorf("the new account lists the old account's chat %+v", ch)
		}
	}
	if _, err := lw.c.ResolveChat(context.Background(), "Family"); err == nil {
		t.Error("the old account's group still resolves")
	}
}

// familyGroup is the group Family of a waWorld.
const familyGroup = "120363000000000001@g.us"

// TestNameChoice: a person shows by the owner's name for them (address
// book) unless names: push_name asks for the name they gave themselves;
// a message by LID finds the address book's entry by number.
func TestNameChoice(t *testing.T) {
	for _, tc := range []struct{ names, want string }{{NamesAddressBook, "Bobby B"}, {NamesPushName, "Bob"}} {
		t.Run(tc.names, func(t *testing.T) {
			opts := rigOptions()
			opts.Names = tc.names
			lw := newLinkedWorldWith(t, fakewa.Options{LIDAddressing: true}, opts, func(w *waWorld) {
				if err := w.ann.SetContact(context.Background(), w.bob.PN, "Bobby B", "Bobby"); err != nil {
					t.Fatal(err)
				}
			})
			waitUntil(t, "the address book", func() bool {
				all, err := lw.c.dev().Contacts.GetAllContacts(context.Background())
				return err == nil && all[lw.bob.PN].FullName == "Bobby B"
			})
			lw.c.chats.invalidateNames()
			if ev := lw.says(t, lw.bob, lw.ann.PN, "by LID"); ev.Sender.Name != tc.want || ev.Chat.Name != tc.want {
				t.Errorf("Bob's message shows from %q in %q, want %q", ev.Sender.Name, ev.Chat.Name, tc.want)
			}
			// The chat list, where routes name chats, agrees.
			if got, err := lw.c.ResolveChat(ctxFor(t), tc.want); err != nil || got != lw.bob.PN.String() {
				t.Errorf("ResolveChat(%q) = %q, %v; want Bob's chat", tc.want, got, err)
			}
		})
	}
}

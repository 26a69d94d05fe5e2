package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

const (
	aliceChat   = "15550004444@s.whatsapp.net"
	shopChat    = "15550005555@s.whatsapp.net"
	familyGroup = "120363000000000001@g.us"
	workGroup   = "120363000000000002@g.us"
	teamA       = "120363000000000003@g.us"
	teamB       = "120363000000000004@g.us"
)

// addressBook puts the people of these tests into the link's contacts, as
// whatsmeow's app-state sync and push names do.
func addressBook(t *testing.T, c *Connector) {
	t.Helper()
	ctx := context.Background()
	contacts := c.dev().Contacts
	// whatsmeow passes the first name first, whatever the interface's
	// parameter names say (appstate.go, sqlstore).
	if err := contacts.PutContactName(ctx, mustJID(t, aliceChat), "Alice", "Alice Smith"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := contacts.PutPushName(ctx, mustJID(t, bobChat), "Bobby"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := contacts.PutBusinessName(ctx, mustJID(t, shopChat), "Corner Shop"); err != nil {
		t.Fatal(err)
	}
}

func groupInfos(t *testing.T, names map[string]string) []*types.GroupInfo {
	var out []*types.GroupInfo
	for id, name := range names {
		out = append(out, &types.GroupInfo{JID: mustJID(t, id), GroupName: types.GroupName{Name: name}})
	}
	return out
}

// waitChatsLoaded waits until the link has loaded its groups from WhatsApp.
func waitChatsLoaded(t *testing.T, c *Connector, s *recSink) {
	t.Helper()
	s.waitFor(t, "ChatsChanged after loading the groups", func() bool { return s.chatsChg > 0 })
	c.chats.mu.Lock()
	defer c.chats.mu.Unlock()
	if !c.chats.loaded {
		t.Fatal("ChatsChanged before the groups were loaded")
	}
}

func TestChatsListAndSearch(t *testing.T) {
	r := newRig(t)
	r.wa.groups = groupInfos(t, map[string]string{familyGroup: "Family", workGroup: "Work", teamA: "Team", teamB: "Team"})
	c := r.linked("me", "+15550001111", "Ann", nil)
	addressBook(t, c)
	s, _ := r.startConnected(c)
	waitChatsLoaded(t, c, s)

	all, err := c.Chats(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []bridge.ChatInfo{
		{ID: aliceChat, Name: "Alice Smith"},
		{ID: bobChat, Name: "Bobby"},
		{ID: shopChat, Name: "Corner Shop"},
		{ID: familyGroup, Name: "Family", Group: true},
		{ID: teamA, Name: "Team", Group: true},
		{ID: teamB, Name: "Team", Group: true},
		{ID: workGroup, Name: "Work", Group: true},
	}
	if !reflect.DeepEqual(all, want) {
		t.Errorf("Chats:\n got %+v\nwant %+v", all, want)
	}
	for search, ids := range map[string][]string{
		"fam":     {familyGroup},
		"TEAM":    {teamA, teamB},
		"5550002": {bobChat}, // by number
		"@g.us":   {familyGroup, teamA, teamB, workGroup},
		"nobody":  nil,
	} {
		got, err := c.Chats(context.Background(), search)
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs []string
		for _, ch := range got {
			gotIDs = append(gotIDs, ch.ID)
		}
		if !reflect.DeepEqual(gotIDs, ids) {
			t.Errorf("Chats(%q) = %v, want %v", search, gotIDs, ids)
		}
	}

	// A group renamed on the phone shows under its new name.
	changed := 0
	s.mu.Lock()
	changed = s.chatsChg
	s.mu.Unlock()
	r.wa.client(t, 1).deliver(&events.GroupInfo{JID: mustJID(t, workGroup), Name: &types.GroupName{Name: "Office"}, Timestamp: time.Now()})
	s.waitFor(t, "ChatsChanged after the rename", func() bool { return s.chatsChg > changed })
	got, _ := c.Chats(context.Background(), "office")
	if len(got) != 1 || got[0].ID != workGroup {
		t.Errorf("after the rename Chats(office) = %+v", got)
	}

	// A group joined later is a chat at once.
	s.mu.Lock()
	changed = s.chatsChg
	s.mu.Unlock()
	const joined = "120363000000000099@g.us"
	r.wa.client(t, 1).deliver(&events.JoinedGroup{GroupInfo: types.GroupInfo{JID: mustJID(t, joined), GroupName: types.GroupName{Name: "Book club"}}})
	s.waitFor(t, "ChatsChanged after joining a group", func() bool { return s.chatsChg > changed })
	if got, _ := c.Chats(context.Background(), "book"); len(got) != 1 || got[0].ID != joined || !got[0].Group {
		t.Errorf("after joining Chats(book) = %+v", got)
	}
}

func TestResolveChat(t *testing.T) {
	r := newRig(t)
	r.wa.groups = groupInfos(t, map[string]string{familyGroup: "Family", teamA: "Team", teamB: "Team"})
	c := r.linked("me", "+15550001111", "Ann", nil)
	addressBook(t, c)
	ctx := context.Background()

	// Before the groups are loaded: ids and known contacts resolve, a
	// name that may be a group waits for the list.
	if id, err := c.ResolveChat(ctx, "Alice Smith"); err != nil || id != aliceChat {
		t.Errorf("ResolveChat(Alice Smith) before loading = %q, %v", id, err)
	}
	if _, err := c.ResolveChat(ctx, "Family"); !errors.Is(err, bridge.ErrChatListUnavailable) {
		t.Errorf("ResolveChat(Family) before loading: %v, want it to wrap ErrChatListUnavailable", err)
	}

	s, _ := r.startConnected(c)
	waitChatsLoaded(t, c, s)
	for in, want := range map[string]string{
		"Family":                       familyGroup,
		"Alice Smith":                  aliceChat,
		"Corner Shop":                  shopChat,
		bobChat:                        bobChat,
		"15550002222:7@s.whatsapp.net": bobChat, // a device's JID names the person's chat
		familyGroup:                    familyGroup,
		"120363999999999999@g.us":      "120363999999999999@g.us", // an id is not looked up
	} {
		if got, err := c.ResolveChat(ctx, in); err != nil || got != want {
			t.Errorf("ResolveChat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, says := range map[string][]string{
		"Team":            {"2 WhatsApp chats", teamA, teamB, "use the chat id"},
		"Nobody":          {`is called "Nobody"`, "phonebridge chats me --search"},
		"family":          {`is called "family"`}, // names match exactly
		"@s.whatsapp.net": {"is not a WhatsApp chat id"},
	} {
		_, err := c.ResolveChat(ctx, in)
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

	// The group names are kept: after a restart they resolve before
	// connecting.
	flushStore(t, r.store)
	stopWithin(t, c)
	again := r.open("me", nil)
	if id, err := again.ResolveChat(ctx, "Family"); err != nil || id != familyGroup {
		t.Errorf("after a restart, ResolveChat(Family) = %q, %v", id, err)
	}
}

func TestResolveChatUnlinked(t *testing.T) {
	r := newRig(t)
	c := r.open("me", nil)
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
// the first account's groups are gone.
func TestChatsForgottenOnUnlink(t *testing.T) {
	r := newRig(t)
	r.wa.groups = groupInfos(t, map[string]string{familyGroup: "Family"})
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, _ := r.startConnected(c)
	waitChatsLoaded(t, c, s)
	if err := c.Unlink(context.Background(), true); err != nil {
		t.Fatal(err)
	}

	r.wa.update(func() { r.wa.groups = nil })
	res := startLink(context.Background(), c, bridge.LinkOptions{}, newProgressLog())
	cl := r.wa.client(t, 2)
	cl.waitConnected(t)
	cl.pair(t, "+15550007777", "Dan", "ios")
	if got := awaitLink(t, res); got.err != nil {
		t.Fatal(got.err)
	}
	flushStore(t, r.store)
	chats, err := c.Chats(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chats {
		if ch.ID == familyGroup {
			t.Errorf("the new account lists the old account's group %+v", ch)
		}
	}
	if _, err := c.ResolveChat(context.Background(), "Family"); err == nil {
		t.Error("the old account's group still resolves")
	}
}

// TestEventNames: relayed events carry the chat's and the sender's names,
// from the address book, push names and group info.
func TestEventNames(t *testing.T) {
	r := newRig(t)
	r.wa.groups = groupInfos(t, map[string]string{familyGroup: "Family"})
	c := r.linked("me", "+15550001111", "Ann", nil)
	addressBook(t, c)
	s, cl := r.startConnected(c)

	for _, tc := range []struct {
		chat, sender, pushName string
		fromMe                 bool
		chatName, senderName   string
	}{
		{aliceChat, aliceChat, "Ali", false, "Alice Smith", "Alice Smith"}, // the address book beats the push name
		{familyGroup, "15550006666@s.whatsapp.net", "Eve", false, "Family", "Eve"},
		{familyGroup, "15550008888@s.whatsapp.net", "", false, "Family", "+15550008888"},
		{bobChat, annAccount.ID, "", true, "Bobby", "Ann"},
	} {
		msg := waText(mustJID(t, tc.chat), mustJID(t, tc.sender), "N"+tc.sender, tc.pushName, "hello")
		msg.Info.IsFromMe = tc.fromMe
		before := len(s.eventList())
		if !cl.deliver(msg) {
			t.Fatalf("message in %s not taken", tc.chat)
		}
		ev := s.eventList()[before]
		if ev.Chat.Name != tc.chatName || ev.Sender.Name != tc.senderName || ev.Sender.IsOwner != tc.fromMe {
			t.Errorf("message from %s in %s: chat %q, sender %+v; want chat %q, sender %q", tc.sender, tc.chat, ev.Chat.Name, ev.Sender, tc.chatName, tc.senderName)
		}
	}
}

// A mention shows as the person's name: WhatsApp writes "@" and a number,
// which means nothing on other platforms.
func TestMentionsNamed(t *testing.T) {
	r := newRig(t)
	r.wa.groups = groupInfos(t, map[string]string{familyGroup: "Family"})
	c := r.linked("me", "+15550001111", "Ann", nil)
	addressBook(t, c)
	s, cl := r.startConnected(c)

	msg := waText(mustJID(t, familyGroup), mustJID(t, bobChat), "MENTION1", "Bobby", "")
	text := "hi @15550004444 and @155500044449, ask @15550009999 *now*"
	msg.Message = &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text: proto.String(text),
		ContextInfo: &waE2E.ContextInfo{MentionedJID: []string{
			aliceChat, "15550009999@s.whatsapp.net", // the second is not in the address book
		}},
	}}
	before := len(s.eventList())
	if !cl.deliver(msg) {
		t.Fatal("message not taken")
	}
	ev := s.eventList()[before]
	if want := "hi @Alice Smith and @155500044449, ask @15550009999 *now*"; ev.Text != want {
		t.Errorf("text %q, want %q", ev.Text, want)
	}
	if !strings.Contains(ev.HTML, "@Alice Smith") || !strings.Contains(ev.HTML, "<b>now</b>") {
		t.Errorf("html %q, want the name and the formatting", ev.HTML)
	}
}

// A group change the owner made (from the phone) is marked as the owner's,
// by phone number or by LID; someone else's is not.
func TestGroupNoticeByOwner(t *testing.T) {
	r := newRig(t)
	r.wa.groups = groupInfos(t, map[string]string{familyGroup: "Family"})
	c := r.linked("me", "+15550001111", "Ann", nil)
	c.dev().LID = mustJID(t, "98765@lid")
	s, cl := r.startConnected(c)

	for i, tc := range []struct {
		sender string
		owner  bool
	}{
		{annAccount.ID, true},
		{"98765@lid", true},
		{"15550006666@s.whatsapp.net", false},
	} {
		sender := mustJID(t, tc.sender)
		before := len(s.eventList())
		evt := &events.GroupInfo{
			JID:       mustJID(t, familyGroup),
			Sender:    &sender,
			Timestamp: time.Unix(1700000000+int64(i), 0),
			Name:      &types.GroupName{Name: fmt.Sprintf("Family %d", i)},
		}
		if !cl.deliver(evt) {
			t.Fatalf("%s: group change not taken", tc.sender)
		}
		evs := s.eventList()[before:]
		if len(evs) != 1 {
			t.Fatalf("%s: %d events, want the subject change", tc.sender, len(evs))
		}
		if evs[0].Sender.IsOwner != tc.owner || evs[0].Sender.ID != sender.String() {
			t.Errorf("%s: sender %+v, want owner=%v", tc.sender, evs[0].Sender, tc.owner)
		}
	}
}

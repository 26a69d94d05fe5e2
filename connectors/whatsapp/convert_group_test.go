package whatsapp

import (
	"reflect"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

var (
	carolJID    = types.NewJID("15550003333", types.DefaultUserServer)
	strangerJID = types.NewJID("15550004444", types.DefaultUserServer)
)

// groupNames knows everyone in the group tests but the stranger.
func groupNames(j types.JID) string {
	return map[types.JID]string{
		aliceJID: "Alice", bobJID: "Bob", carolJID: "Carol", aliceLID: "Alice",
	}[j.ToNonAD()]
}

func jidAddr(j types.JID) *types.JID { return &j }

// groupNotice is one expected group notice: who it is from and what it says.
type groupNotice struct {
	sender bridge.Sender
	text   string
}

func TestConvertGroupInfo(t *testing.T) {
	byAlice := bridge.Sender{ID: aliceJID.String(), Name: "Alice"}
	byBob := bridge.Sender{ID: bobJID.String(), Name: "Bob"}
	tests := []struct {
		name string
		evt  events.GroupInfo
		want []groupNotice
	}{
		{"joins by themselves",
			events.GroupInfo{Sender: jidAddr(onDevice(aliceJID, 3)), Join: []types.JID{aliceJID}},
			[]groupNotice{{byAlice, "Alice joined"}}},
		{"joins by invite link, no sender",
			events.GroupInfo{JoinReason: "invite", Join: []types.JID{aliceJID}},
			[]groupNotice{{byAlice, "Alice joined using an invite link"}}},
		{"several join, no sender",
			events.GroupInfo{Join: []types.JID{aliceJID, bobJID, carolJID}},
			[]groupNotice{{bridge.Sender{}, "Alice, Bob and Carol joined"}}},
		{"added by an admin",
			events.GroupInfo{Sender: jidAddr(bobJID), Join: []types.JID{aliceJID, carolJID}},
			[]groupNotice{{byBob, "Bob added Alice and Carol"}}},
		{"added by a LID admin known by phone",
			events.GroupInfo{Sender: jidAddr(aliceLID), SenderPN: jidAddr(aliceJID), Join: []types.JID{aliceJID}},
			[]groupNotice{{bridge.Sender{ID: aliceLID.String(), Name: "Alice"}, "Alice joined"}}},
		{"unknown person",
			events.GroupInfo{Sender: jidAddr(strangerJID), Join: []types.JID{strangerJID}},
			[]groupNotice{{bridge.Sender{ID: strangerJID.String(), Name: "+15550004444"}, "+15550004444 joined"}}},
		{"leaves",
			events.GroupInfo{Sender: jidAddr(aliceJID), Leave: []types.JID{aliceJID}},
			[]groupNotice{{byAlice, "Alice left"}}},
		{"removed",
			events.GroupInfo{Sender: jidAddr(bobJID), Leave: []types.JID{aliceJID}},
			[]groupNotice{{byBob, "Bob removed Alice"}}},
		{"promoted",
			events.GroupInfo{Sender: jidAddr(bobJID), Promote: []types.JID{aliceJID}},
			[]groupNotice{{byBob, "Bob made Alice an admin"}}},
		{"promoted, no sender",
			events.GroupInfo{Promote: []types.JID{aliceJID, carolJID}},
			[]groupNotice{{bridge.Sender{}, "Alice and Carol are now admins"}}},
		{"demoted",
			events.GroupInfo{Sender: jidAddr(bobJID), Demote: []types.JID{aliceJID, carolJID}},
			[]groupNotice{{byBob, "Bob removed Alice and Carol as admins"}}},
		{"demoted, no sender",
			events.GroupInfo{Demote: []types.JID{aliceJID}},
			[]groupNotice{{bridge.Sender{}, "Alice is no longer an admin"}}},
		{"subject",
			events.GroupInfo{Sender: jidAddr(aliceJID), Name: &types.GroupName{Name: "Book club", NameSetBy: aliceJID}},
			[]groupNotice{{byAlice, "Alice changed the subject to “Book club”"}}},
		{"subject, setter only in the change",
			events.GroupInfo{Name: &types.GroupName{Name: "Book club", NameSetBy: onDevice(bobJID, 2)}},
			[]groupNotice{{byBob, "Bob changed the subject to “Book club”"}}},
		{"subject, nobody known",
			events.GroupInfo{Name: &types.GroupName{Name: "Book club"}},
			[]groupNotice{{bridge.Sender{}, "The subject is now “Book club”"}}},
		{"description",
			events.GroupInfo{Sender: jidAddr(aliceJID), Topic: &types.GroupTopic{Topic: "Monthly, first Monday", TopicSetBy: aliceJID}},
			[]groupNotice{{byAlice, "Alice changed the group description to “Monthly, first Monday”"}}},
		{"description, setter only in the change",
			events.GroupInfo{Topic: &types.GroupTopic{Topic: "d", TopicSetBy: bobJID}},
			[]groupNotice{{byBob, "Bob changed the group description to “d”"}}},
		{"description removed",
			events.GroupInfo{Sender: jidAddr(aliceJID), Topic: &types.GroupTopic{TopicDeleted: true}},
			[]groupNotice{{byAlice, "Alice removed the group description"}}},
		{"description removed, nobody known",
			events.GroupInfo{Topic: &types.GroupTopic{Topic: ""}},
			[]groupNotice{{bridge.Sender{}, "The group description was removed"}}},
		{"announce",
			events.GroupInfo{Sender: jidAddr(bobJID), Announce: &types.GroupAnnounce{IsAnnounce: true}},
			[]groupNotice{{byBob, "Bob allowed only admins to send messages"}}},
		{"announce off, nobody known",
			events.GroupInfo{Announce: &types.GroupAnnounce{IsAnnounce: false}},
			[]groupNotice{{bridge.Sender{}, "All members can send messages now"}}},
		{"locked",
			events.GroupInfo{Sender: jidAddr(bobJID), Locked: &types.GroupLocked{IsLocked: true}},
			[]groupNotice{{byBob, "Bob allowed only admins to edit the group info"}}},
		{"unlocked",
			events.GroupInfo{Sender: jidAddr(bobJID), Locked: &types.GroupLocked{IsLocked: false}},
			[]groupNotice{{byBob, "Bob allowed all members to edit the group info"}}},
		{"disappearing on",
			events.GroupInfo{Sender: jidAddr(bobJID), Ephemeral: &types.GroupEphemeral{IsEphemeral: true, DisappearingTimer: 90 * 86400}},
			[]groupNotice{{byBob, "Bob turned on disappearing messages (90 days)"}}},
		{"disappearing off",
			events.GroupInfo{Sender: jidAddr(bobJID), Ephemeral: &types.GroupEphemeral{IsEphemeral: false, DisappearingTimer: 86400}},
			[]groupNotice{{byBob, "Bob turned off disappearing messages"}}},
		{"disappearing on, nobody known",
			events.GroupInfo{Ephemeral: &types.GroupEphemeral{IsEphemeral: true, DisappearingTimer: 86400}},
			[]groupNotice{{bridge.Sender{}, "Disappearing messages are on (1 day)"}}},
		{"disappearing off, nobody known",
			events.GroupInfo{Ephemeral: &types.GroupEphemeral{}},
			[]groupNotice{{bridge.Sender{}, "Disappearing messages are off"}}},
		{"deleted",
			events.GroupInfo{Sender: jidAddr(bobJID), Delete: &types.GroupDelete{Deleted: true}},
			[]groupNotice{{byBob, "Bob deleted the group"}}},
		{"several changes at once, in order",
			events.GroupInfo{
				Sender:  jidAddr(bobJID),
				Join:    []types.JID{bobJID, aliceJID},
				Promote: []types.JID{aliceJID},
				Name:    &types.GroupName{Name: "New"},
			},
			[]groupNotice{
				{byBob, "Bob joined"},
				{byBob, "Bob added Alice"},
				{byBob, "Bob made Alice an admin"},
				{byBob, "Bob changed the subject to “New”"},
			}},
		// Nothing people read: no notice.
		{"invite link reset", events.GroupInfo{Sender: jidAddr(bobJID), NewInviteLink: new(string)}, nil},
		{"not deleted", events.GroupInfo{Delete: &types.GroupDelete{}}, nil},
		{"empty", events.GroupInfo{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evt := tt.evt
			evt.JID, evt.Timestamp = groupJID, convSentAt
			got := convertGroupInfo(&evt, groupNames)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d notices %+v; want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			ids := map[string]bool{}
			for i, ev := range got {
				want := bridge.Event{
					Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "120363000000000001@g.us"}, ID: ev.ID,
					Sender: tt.want[i].sender, Time: convSentAt, Text: tt.want[i].text, Notice: true,
				}
				if !reflect.DeepEqual(ev, want) {
					t.Errorf("notice %d\n got %+v\nwant %+v", i, ev, want)
				}
				if !strings.HasPrefix(ev.ID, "group.") || ids[ev.ID] {
					t.Errorf("notice %d has id %q: not a group notice id, or not unique", i, ev.ID)
				}
				ids[ev.ID] = true
				if err := ev.Check(); err != nil {
					t.Errorf("the core would refuse notice %d: %v", i, err)
				}
			}
		})
	}
}

// TestConvertGroupInfoIDs: a redelivered notification gets the same ids,
// so it is relayed once; a different change gets others.
func TestConvertGroupInfoIDs(t *testing.T) {
	evt := func() *events.GroupInfo {
		return &events.GroupInfo{JID: groupJID, Timestamp: convSentAt, Sender: jidAddr(bobJID), Join: []types.JID{aliceJID}, Leave: []types.JID{carolJID}}
	}
	first, again := convertGroupInfo(evt(), groupNames), convertGroupInfo(evt(), groupNames)
	if len(first) != 2 || len(again) != 2 || first[0].ID != again[0].ID || first[1].ID != again[1].ID {
		t.Fatalf("ids differ on redelivery: %+v vs %+v", first, again)
	}
	later := evt()
	later.Timestamp = convSentAt.Add(1e9)
	if got := convertGroupInfo(later, groupNames); got[0].ID == first[0].ID {
		t.Errorf("the same change a second later has the same id %q", got[0].ID)
	}
	other := evt()
	other.JID = types.NewJID("120363000000000002", types.GroupServer)
	if got := convertGroupInfo(other, groupNames); got[0].ID == first[0].ID {
		t.Errorf("the same change in another group has the same id %q", got[0].ID)
	}
}

// TestConvertGroupInfoNames: without a name resolver, or when it knows
// nobody, people show as their numbers.
func TestConvertGroupInfoNames(t *testing.T) {
	evt := &events.GroupInfo{JID: groupJID, Timestamp: convSentAt, Sender: jidAddr(bobJID), Join: []types.JID{aliceLID}}
	for name, names := range map[string]func(types.JID) string{
		"no resolver":  nil,
		"knows nobody": func(types.JID) string { return "" },
	} {
		got := convertGroupInfo(evt, names)
		want := "+15550002222 added 987654321012345"
		if len(got) != 1 || got[0].Text != want || got[0].Sender.Name != "+15550002222" {
			t.Errorf("%s: got %+v; want one notice %q by +15550002222", name, got, want)
		}
	}
	if got := convertGroupInfo(nil, groupNames); got != nil {
		t.Errorf("a nil event gave %+v", got)
	}
}

func TestJoinNames(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"Ann"}, "Ann"},
		{[]string{"Ann", "Bob"}, "Ann and Bob"},
		{[]string{"Ann", "Bob", "Cat", "Dan"}, "Ann, Bob, Cat and Dan"},
	} {
		if got := joinNames(tt.in); got != tt.want {
			t.Errorf("joinNames(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

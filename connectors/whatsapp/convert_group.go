package whatsapp

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// convertGroupInfo turns a group change into notices (Kind message, Notice
// true), sent by whoever made the change where WhatsApp says: joins and
// additions, leaves and removals, admin changes, subject and description
// changes, and who may send or edit, disappearing messages, deletion.
// names resolves a JID to a display name. Each notice's ID is derived from
// the change, so a redelivered notification is relayed once.
func convertGroupInfo(evt *events.GroupInfo, names func(types.JID) string) []bridge.Event {
	if evt == nil {
		return nil
	}
	name := func(j types.JID) string {
		if names != nil {
			if n := names(j); n != "" {
				return n
			}
		}
		return jidLabel(j)
	}
	var actor types.JID
	if evt.Sender != nil {
		actor = evt.Sender.ToNonAD()
	}
	// isActor reports whether j made the change itself (joined, left).
	isActor := func(j types.JID) bool {
		j = j.ToNonAD()
		return actor.IsEmpty() || j == actor || (evt.SenderPN != nil && j == evt.SenderPN.ToNonAD())
	}

	var out []bridge.Event
	add := func(by types.JID, text string) {
		ev := bridge.Event{
			Kind:   bridge.KindMessage,
			Chat:   chatRef(evt.JID),
			Time:   evt.Timestamp,
			Text:   text,
			Notice: true,
		}
		if !by.IsEmpty() {
			ev.Sender = bridge.Sender{ID: by.ToNonAD().String(), Name: name(by)}
		}
		sum := sha256.Sum256([]byte(ev.Chat.ID + "\x00" + strconv.FormatInt(evt.Timestamp.UnixMilli(), 10) + "\x00" + ev.Sender.ID + "\x00" + text))
		ev.ID = "group." + hex.EncodeToString(sum[:12])
		out = append(out, ev)
	}
	// byActor says "Bob <verb>" when the actor is known, else "<passive>".
	byActor := func(verb, passive string) {
		if actor.IsEmpty() {
			add(actor, passive)
		} else {
			add(actor, name(actor)+" "+verb)
		}
	}
	// members reports a membership change: those who did it themselves
	// (self: "Ann joined") and those the actor did it to (other: "Bob added Ann").
	members := func(jids []types.JID, self, other string) {
		var own, done []string
		var first types.JID
		for _, j := range jids {
			if isActor(j) {
				if len(own) == 0 {
					first = j
				}
				own = append(own, name(j))
			} else {
				done = append(done, name(j))
			}
		}
		if len(own) > 0 {
			by := actor
			if by.IsEmpty() && len(own) == 1 {
				by = first
			}
			add(by, joinNames(own)+" "+self)
		}
		if len(done) > 0 {
			add(actor, name(actor)+" "+strings.ReplaceAll(other, "%s", joinNames(done)))
		}
	}

	joined := "joined"
	if evt.JoinReason == "invite" {
		joined = "joined using an invite link"
	}
	members(evt.Join, joined, "added %s")
	members(evt.Leave, "left", "removed %s")
	if len(evt.Promote) > 0 {
		list := namesOf(evt.Promote, name)
		byActor("made "+list+" "+admins(len(evt.Promote)), list+" "+isAre(len(evt.Promote))+" now "+admins(len(evt.Promote)))
	}
	if len(evt.Demote) > 0 {
		list := namesOf(evt.Demote, name)
		byActor("removed "+list+" as "+admins(len(evt.Demote)), list+" "+isAre(len(evt.Demote))+" no longer "+admins(len(evt.Demote)))
	}
	if n := evt.Name; n != nil {
		if actor.IsEmpty() && !n.NameSetBy.IsEmpty() {
			actor = n.NameSetBy.ToNonAD()
		}
		byActor("changed the subject to “"+n.Name+"”", "The subject is now “"+n.Name+"”")
	}
	if t := evt.Topic; t != nil {
		if actor.IsEmpty() && !t.TopicSetBy.IsEmpty() {
			actor = t.TopicSetBy.ToNonAD()
		}
		if t.TopicDeleted || t.Topic == "" {
			byActor("removed the group description", "The group description was removed")
		} else {
			byActor("changed the group description to “"+t.Topic+"”", "The group description is now “"+t.Topic+"”")
		}
	}
	if a := evt.Announce; a != nil {
		if a.IsAnnounce {
			byActor("allowed only admins to send messages", "Only admins can send messages now")
		} else {
			byActor("allowed all members to send messages", "All members can send messages now")
		}
	}
	if l := evt.Locked; l != nil {
		if l.IsLocked {
			byActor("allowed only admins to edit the group info", "Only admins can edit the group info now")
		} else {
			byActor("allowed all members to edit the group info", "All members can edit the group info now")
		}
	}
	if e := evt.Ephemeral; e != nil {
		timer := uint32(0)
		if e.IsEphemeral {
			timer = e.DisappearingTimer
		}
		if actor.IsEmpty() {
			text := "Disappearing messages are off"
			if timer != 0 {
				text = "Disappearing messages are on (" + durationText(timer) + ")"
			}
			add(actor, text)
		} else {
			add(actor, disappearingText(name(actor), timer))
		}
	}
	if d := evt.Delete; d != nil && d.Deleted {
		byActor("deleted the group", "The group was deleted")
	}
	return out
}

func namesOf(jids []types.JID, name func(types.JID) string) string {
	names := make([]string, len(jids))
	for i, j := range jids {
		names[i] = name(j)
	}
	return joinNames(names)
}

// joinNames lists names as people write them: "Ann", "Ann and Bob",
// "Ann, Bob and Cat".
func joinNames(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func admins(n int) string {
	if n == 1 {
		return "an admin"
	}
	return "admins"
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

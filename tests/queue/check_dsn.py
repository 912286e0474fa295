#!/usr/bin/env python3
"""Parses a delivery status notification with Python's email package (as a mail
client would) and prints what it found as JSON. Used by queue_test.cc to show that the
queue's bounces are valid RFC 3464 multipart/report messages."""
import email
import email.policy
import json
import sys

with open(sys.argv[1], 'rb') as f:
    msg = email.message_from_binary_file(f, policy=email.policy.default)

out = {
    'defects': [str(d) for d in msg.defects],
    'content_type': msg.get_content_type(),
    'report_type': msg.get_param('report-type'),
    'to': str(msg['To']),
    'from': str(msg['From']),
    'subject': str(msg['Subject']),
    'parts': [p.get_content_type() for p in msg.iter_parts()],
}
parts = list(msg.iter_parts())
out['text'] = parts[0].get_content()
status = parts[1]
# The message/delivery-status payload: per-message block, then one per recipient.
blocks = status.get_payload()
out['reporting_mta'] = blocks[0]['Reporting-MTA']
out['recipients'] = [{
    'final_recipient': b['Final-Recipient'],
    'action': b['Action'],
    'status': b['Status'],
    'diagnostic': b['Diagnostic-Code'],
} for b in blocks[1:]]
out['original_headers'] = parts[2].get_content()
print(json.dumps(out))

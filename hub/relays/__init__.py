"""Kelurahan relays that confirm they passed the news on (issue 11).

``codes`` makes and reads the short signed codes, ``outbound`` adds the way to confirm to what a relay
receives, ``acks`` records confirmations from the relay's own chat, ``remind`` sends one reminder and
then tells the office (reconciler steps), ``manage`` lists, pauses, resumes and removes relays and shows
per announcement who confirmed.
"""

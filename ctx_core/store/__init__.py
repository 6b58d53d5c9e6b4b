"""The image store: the one owner of its layout, tables, schemas and image reading.

- ``layout``: file names, manifest / annotation / class I/O, split listing;
- ``schemas``: the pandera schemas of the tables and their one-line validator;
- ``images``: image suffixes and decoding;
- ``voc``: a PASCAL VOC root's lists and annotation XML;
- ``labelled``: one labelled split (store or VOC root) as image records with boxes.

Stages read and write the store only through these modules.
"""

"""`alpr eval`: plate-reading accuracy on labelled photos, through the pipeline's own per-frame code.

- `datasets`: the two layouts of labelled folders (scene photos with `NAME.txt`, crop folders with
  `groundtruth.csv`), parsed into `Sample`s; clear `DatasetError`s for bad paths and label files.
- `metrics`: pure scoring (recall at IoU ≥ 0.5, exact plates, character accuracy, confusions).
- `frame`: one image through detect → best crop → OCR → events' normalisation and format correction,
  calling the functions the services call.
- `runner`: a process pool (each worker opens the models once) with a progress bar on stderr.
- `report`: the text table, the JSON summary and the HTML page of failures.
- `cli`: the `alpr eval` command.

Never: copy the shared photos anywhere but the report directory the user names, or download anything.
"""

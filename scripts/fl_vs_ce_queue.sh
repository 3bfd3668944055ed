#!/usr/bin/env bash
# Issue 22's runs, one job at a time, resumable: rerun the same command and every finished
# job is skipped, an interrupted one resumes from its newest checkpoint.
#
#   bash scripts/fl_vs_ce_queue.sh parity   # retina vs torchvision's RetinaNet on shapes (400 it)
#   bash scripts/fl_vs_ce_queue.sh study    # FL vs alpha-CE .75: shapes, shapes_coco_like, 4x
#   bash scripts/fl_vs_ce_queue.sh all      # reference rows, the study, then the options
#   bash scripts/fl_vs_ce_queue.sh row coco_like_short  # one study row (shapes_short|coco_like_short|shapes_long)
#   bash scripts/fl_vs_ce_queue.sh retina coco_like_short  # only retina's jobs of a row (tv: torchvision's)
#   bash scripts/fl_vs_ce_queue.sh options  # only the option rows of item 2 (together, then each alone)
#   bash scripts/fl_vs_ce_queue.sh lane shapes_long fl  # one loss of a row (fl|ce_a75): retina, then tv
#
# Two queues may run side by side when their jobs differ (`parity` and `row coco_like_short`);
# a job folder in use by one is refused by the other. On 2 cores, `lane ROW fl` and
# `lane ROW ce_a75` side by side finish a row in half the time of `row ROW` (one thread each,
# no slower than alone: 1.17 it/s per job on shapes, 2026-12-03); `row ROW` afterwards skips
# every finished job. RETINA_QUEUE_PRINT=1 prints each command instead of running it.
#
# Results land in outputs/parity/ and outputs/study22/ (RETINA_QUEUE_OUT replaces outputs/); `retina-report DIR` tabulates each
# sweep folder, with the torchvision runs of DIR/torchvision/ as reference rows. All runs use
# base LR 0.04 (actual 0.02 at batch 8), the best LR of both losses in docs/ablations.md.
# Set RETINA_QUEUE_WORKERS (default 0) for DataLoader workers on a machine with spare cores.
set -u
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY="${PYTHON:-python}"
TRAIN="${RETINA_TRAIN:-retina-train}"
OUT="${RETINA_QUEUE_OUT:-outputs}"
W="train.num_workers=${RETINA_QUEUE_WORKERS:-0}"
LR="study.lr.fl=0.04 study.lr.ce_a75=0.04 study.lr.ce_a50=0.04"
# retina with every torchvision choice that changes the loss (docs/ablations.md, "retina
# against torchvision's RetinaNet"): per-image normaliser, L1 box loss, integer anchors.
TV_LIKE="model.loss_normalizer=image model.box_loss=l1 ++model.torchvision_anchors=true"

run() {  # run COMMAND...: run it, or print it (shell-quoted) with RETINA_QUEUE_PRINT=1
    if [ -n "${RETINA_QUEUE_PRINT:-}" ]; then
        printf '%q ' "$@"
        echo
    else
        "$@"
    fi
}

tv() {  # tv SWEEP_DIR NAME OVERRIDES...: one torchvision reference run
    local dir="$1/torchvision/$2"
    shift 2
    run "$PY" scripts/train_torchvision.py "$dir" +experiment=fl_vs_ce $LR $W "$@"
}

sweep() {  # sweep SWEEP_DIR OVERRIDES...: one retina-train sweep (skips finished jobs)
    local dir="$1"
    shift
    # shellcheck disable=SC2086
    run $TRAIN -m +experiment=fl_vs_ce $LR $W "$@" "hydra.sweep.dir=$dir"
}

tv_seeds() {  # tv_seeds SWEEP_DIR OVERRIDES...: torchvision FL and alpha-CE .75, seeds 0-2
    local dir="$1" s
    shift
    for s in 0 1 2; do
        tv "$dir" "fl_$s" ablation/fl_vs_ce=fl "train.seed=$s" "$@"
        tv "$dir" "ce_a75_$s" ablation/fl_vs_ce=ce_a75 "train.seed=$s" "$@"
    done
}

parity_reference() {  # torchvision's two rows on shapes (400 it.), the target of item 2
    tv_seeds $OUT/parity/shapes_short
}

parity_options() {  # retina with the three torchvision choices, together and each alone (FL)
    local d=$OUT/parity
    # shellcheck disable=SC2086
    sweep $d/shapes_short ablation/fl_vs_ce=fl,ce_a75 train.seed=0,1,2 $TV_LIKE
    sweep $d/shapes_short_image ablation/fl_vs_ce=fl train.seed=0,1,2 model.loss_normalizer=image
    sweep $d/shapes_short_l1 ablation/fl_vs_ce=fl train.seed=0,1,2 model.box_loss=l1
    sweep $d/shapes_short_anchors ablation/fl_vs_ce=fl train.seed=0,1,2 ++model.torchvision_anchors=true
}

parity() {
    parity_reference
    parity_options
}

study_retina() {  # study_retina NAME [OVERRIDE]: item 3, retina FL vs alpha-CE .75, 3 seeds
    local d=$OUT/study22/$1
    shift
    sweep "$d" ablation/fl_vs_ce=fl,ce_a75 train.seed=0,1,2 "$@"
}

study_tv() {  # study_tv NAME [OVERRIDE]: the same rows with torchvision's RetinaNet
    local d=$OUT/study22/$1
    shift
    if [ "$d" = "$OUT/study22/shapes_short" ]; then
        # the same runs as parity_reference: share them instead of training them twice
        run mkdir -p "$d"
        [ -e "$d/torchvision" ] || run ln -s ../../parity/shapes_short/torchvision "$d/torchvision"
    fi
    tv_seeds "$d" "$@"
}

row_overrides() {  # the overrides of one study row
    case "$1" in
        shapes_short) ;;
        coco_like_short) echo data=shapes_coco_like ;;
        shapes_long) echo schedule=long train.eval_period=200 ;;
        *) echo "unknown row $1 (shapes_short|coco_like_short|shapes_long)" >&2; exit 1 ;;
    esac
}

row_retina() {  # row_retina NAME: retina's FL and alpha-CE .75 of one study row, 3 seeds
    local extra
    extra=$(row_overrides "$1") || exit 1
    # shellcheck disable=SC2086
    study_retina "$1" $extra
}

row_tv() {  # row_tv NAME: torchvision's FL and alpha-CE .75 of one study row, 3 seeds
    local extra
    extra=$(row_overrides "$1") || exit 1
    # shellcheck disable=SC2086
    study_tv "$1" $extra
}

row() {  # row NAME: one study row, retina's jobs then torchvision's
    row_retina "$1"
    row_tv "$1"
}

study() {  # issue 22 item 3, retina's default recipe
    row shapes_short
    row coco_like_short
    row shapes_long
}

lane() {  # lane NAME LOSS: one loss of a study row, retina's seeds 0-2, then torchvision's
    # Retina's jobs run as single runs in the folders the row's sweep gives them: jobs vary
    # the loss slowest (fl: 0-2, ce_a75: 3-5; tests/scripts/test_fl_vs_ce_queue.py checks it).
    local name="$1" loss="$2" first extra s dir resume
    case "$loss" in
        fl) first=0 ;;
        ce_a75) first=3 ;;
        *) echo "unknown loss $loss (fl|ce_a75)" >&2; exit 1 ;;
    esac
    extra=$(row_overrides "$name") || exit 1
    for s in 0 1 2; do
        dir=$OUT/study22/$name/$((first + s))
        if [ -f "$dir/metrics.json" ]; then
            echo "$dir: finished, skipped" >&2
            continue
        fi
        resume=()
        [ -d "$dir/checkpoints" ] && resume=(train.resume=true)
        # shellcheck disable=SC2086
        run $TRAIN "ablation/fl_vs_ce=$loss" "train.seed=$s" +experiment=fl_vs_ce $LR $W $extra \
            "${resume[@]}" "hydra.run.dir=$dir" || exit 1
    done
    for s in 0 1 2; do
        # shellcheck disable=SC2086
        tv "$OUT/study22/$name" "${loss}_$s" "ablation/fl_vs_ce=$loss" "train.seed=$s" $extra \
            || exit 1
    done
}

all() {  # the order that answers the most first: reference rows, the study, then the options
    parity_reference
    row shapes_short
    row coco_like_short
    parity_options
    row shapes_long
}

case "${1:-}" in
    parity) parity ;;
    study) study ;;
    all) all ;;
    options) parity_options ;;
    row) row "${2:-}" ;;
    retina) row_retina "${2:-}" ;;
    tv) row_tv "${2:-}" ;;
    lane) lane "${2:-}" "${3:-}" ;;
    *) echo "usage: bash scripts/fl_vs_ce_queue.sh parity|options|study|all|row NAME|retina NAME|tv NAME|lane NAME LOSS" >&2
       exit 1 ;;
esac

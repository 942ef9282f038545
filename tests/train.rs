//! The training runner's pieces that need no GPU: learning-rate schedules against their
//! formulas, the metrics file, plots, settings, model names, run folders, and the CIFAR
//! archive's checksum, unpacking and offline failure.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use cenet::data::{self, cifar::CifarKind, synthetic};
use cenet::train::config::TrainConfig;
use cenet::train::dataset::{DataSource, DatasetName};
use cenet::train::download::{self, Archive};
use cenet::train::metrics::{read_csv, to_csv, write_csv, EpochRecord, CSV_HEADER};
use cenet::train::model::ModelName;
use cenet::train::plot::{self, Chart, Series};
use cenet::train::run_dir::{utc_stamp, RunDir};
use cenet::train::schedule::{default_milestones, Decay, DecayKind, LrSchedule};
use cenet::train::Console;

/// Schedules are evaluated in f64 from the same formula: only rounding can differ.
const TOL_SCHEDULE: f64 = 1e-12;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cenet-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOL_SCHEDULE * want.abs().max(1.0)
}

#[test]
fn warmup_rises_linearly_to_the_base_rate_then_cosine_decays_to_zero() {
    let (eta, epochs, spe, warmup) = (0.1, 10, 7, 2);
    let s = LrSchedule::new(eta, epochs, spe, warmup, Decay::Cosine).unwrap();
    let w = warmup * spe;
    let t_total = epochs * spe;
    for t in 0..w {
        assert!(
            close(s.lr(t), eta * (t + 1) as f64 / w as f64),
            "warm-up step {t}"
        );
    }
    for t in w..t_total {
        let p = (t - w) as f64 / (t_total - w) as f64;
        let want = eta * 0.5 * (1.0 + (PI * p).cos());
        assert!(
            close(s.lr(t), want),
            "cosine step {t}: {} vs {want}",
            s.lr(t)
        );
    }
    assert!(
        close(s.lr(w), eta),
        "the first step after warm-up trains at the base rate"
    );
    assert!(s.lr(t_total - 1) < 1e-3 * eta);
    // Past the end (a longer resumed run) the rate stays at the bottom.
    assert!(close(s.lr(t_total + 5), 0.0));
}

#[test]
fn cosine_without_warmup_starts_at_the_base_rate() {
    let s = LrSchedule::new(0.05, 3, 4, 0, Decay::Cosine).unwrap();
    assert!(close(s.lr(0), 0.05));
    assert!(close(s.lr(6), 0.05 * 0.5 * (1.0 + (PI * 0.5).cos())));
}

#[test]
fn step_decay_multiplies_by_gamma_at_each_milestone_epoch() {
    let spe = 5;
    let decay = Decay::Step {
        milestones: vec![3, 6],
        gamma: 0.1,
    };
    let s = LrSchedule::new(0.1, 8, spe, 1, decay).unwrap();
    for t in 0..spe {
        assert!(
            close(s.lr(t), 0.1 * (t + 1) as f64 / spe as f64),
            "warm-up {t}"
        );
    }
    for t in spe..8 * spe {
        let epoch = t / spe;
        let want = match epoch {
            0..=2 => 0.1,
            3..=5 => 0.01,
            _ => 0.001,
        };
        assert!(close(s.lr(t), want), "step {t} (epoch {epoch})");
    }
    assert_eq!(default_milestones(200), vec![100, 150]);
}

#[test]
fn constant_schedule_and_bad_schedules() {
    let s = LrSchedule::new(0.3, 2, 2, 0, Decay::Constant).unwrap();
    assert!((0..10).all(|t| close(s.lr(t), 0.3)));
    let err = |r: cenet::Result<LrSchedule>| r.unwrap_err().to_string();
    assert!(err(LrSchedule::new(0.0, 2, 2, 0, Decay::Cosine)).contains("positive"));
    assert!(err(LrSchedule::new(0.1, 2, 2, 2, Decay::Cosine)).contains("warm-up"));
    assert!(err(LrSchedule::new(0.1, 0, 2, 0, Decay::Cosine)).contains("nothing to train"));
    assert!("linear"
        .parse::<DecayKind>()
        .unwrap_err()
        .to_string()
        .contains("cosine, step or constant"));
}

fn record(epoch: u64) -> EpochRecord {
    EpochRecord {
        epoch,
        step: epoch * 390,
        lr: 0.1 / epoch as f64,
        train_loss: 2.0 / epoch as f64,
        train_acc: 0.3 + 0.1 * epoch as f64,
        test_loss: 2.1 / epoch as f64,
        test_acc: 0.25 + 0.1 * epoch as f64,
        seconds: 12.5,
        images_per_second: 4000.0,
    }
}

#[test]
fn metrics_csv_round_trips_and_rejects_a_foreign_file() {
    let dir = scratch("metrics");
    let path = dir.join("metrics.csv");
    let records: Vec<EpochRecord> = (1..=3).map(record).collect();
    write_csv(&path, &records).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(CSV_HEADER));
    assert_eq!(text.lines().count(), 4);
    let back = read_csv(&path).unwrap();
    assert_eq!(back.len(), 3);
    for (a, b) in back.iter().zip(&records) {
        assert_eq!(a.epoch, b.epoch);
        assert_eq!(a.step, b.step);
        assert!((a.test_acc - b.test_acc).abs() < 1e-6);
        assert!((a.lr - b.lr).abs() < 1e-7 * b.lr);
    }

    std::fs::write(&path, "a,b\n1,2\n").unwrap();
    let err = read_csv(&path).unwrap_err().to_string();
    assert!(
        err.contains("metrics.csv") && err.contains("header"),
        "{err}"
    );
    std::fs::write(&path, format!("{CSV_HEADER}\n1,2,x,1,1,1,1,1,1\n")).unwrap();
    let err = read_csv(&path).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("\"x\""), "{err}");
    assert_eq!(to_csv(&[]).trim(), CSV_HEADER);
}

#[test]
fn training_curves_svg_has_a_line_per_series_and_escapes_text() {
    let records: Vec<EpochRecord> = (1..=5).map(record).collect();
    let svg = plot::svg(&plot::training_curves(&records));
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<polyline").count(),
        4,
        "train and test, loss and accuracy"
    );
    assert!(svg.contains(">Loss<") && svg.contains(">Accuracy<"));

    let chart = Chart {
        title: "a < b & c".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        series: vec![Series {
            name: "one point".into(),
            points: vec![(1.0, f64::NAN), (2.0, 3.0)],
        }],
        y_range: None,
    };
    let svg = plot::svg(&[chart]);
    assert!(svg.contains("a &lt; b &amp; c"));
    assert!(
        svg.contains("<circle"),
        "a single finite point is drawn as a dot"
    );
    assert!(!svg.contains("NaN"));
}

#[test]
fn model_names_parse_and_unknown_ones_say_what_exists() {
    assert_eq!(
        "resnet20-ce".parse::<ModelName>().unwrap(),
        ModelName::ResNet {
            depth: 20,
            ce: true
        }
    );
    assert_eq!(
        "ResNet56".parse::<ModelName>().unwrap().to_string(),
        "resnet56"
    );
    let cfg = "resnet8-ce"
        .parse::<ModelName>()
        .unwrap()
        .config(1, 100, 0.1)
        .unwrap();
    assert_eq!(cfg.io(), (1, 100, 0.1));
    for name in [
        "mobilenetv2",
        "mobilenetv2-ce",
        "mobilenetv2-ce-relu6",
        "mobilenetv2-w0.5-ce",
    ] {
        let parsed = name.parse::<ModelName>().unwrap();
        assert_eq!(parsed.to_string(), name);
    }
    let network = "MobileNetV2-w0.5-CE"
        .parse::<ModelName>()
        .unwrap()
        .config(1, 100, 0.1)
        .unwrap();
    assert_eq!(network.io(), (1, 100, 0.1));
    assert_eq!(network.build(1).unwrap().name, "mobilenetv2-w0.5-ce");
    for bad in ["mobilenetv2-relu6", "mobilenetv2-w0-ce", "mobilenetv2-wide"] {
        let err = bad.parse::<ModelName>().unwrap_err().to_string();
        assert!(
            err.contains("unknown model") && err.contains("mobilenetv2-ce"),
            "{err}"
        );
    }
    let err = "resnet21".parse::<ModelName>().unwrap_err().to_string();
    assert!(err.contains("6n + 2"), "{err}");
    let err = "vgg16".parse::<ModelName>().unwrap_err().to_string();
    assert!(
        err.contains("unknown model") && err.contains("resnetN-ce"),
        "{err}"
    );
}

#[test]
fn settings_round_trip_through_their_saved_entries() {
    let config = TrainConfig {
        model: "resnet32".parse().unwrap(),
        data: DataSource {
            name: Some(DatasetName::Cifar100),
            dir: Some(PathBuf::from("/data/c100")),
            train_images: Some(1000),
            test_images: None,
        },
        batch_size: 64,
        epochs: 30,
        lr: 0.05,
        momentum: 0.85,
        weight_decay: 1e-4,
        warmup_epochs: 2,
        schedule: DecayKind::Step,
        milestones: Some(vec![10, 20]),
        gamma: 0.2,
        label_smoothing: 0.1,
        seed: 7,
        augment: false,
        shuffle: true,
    };
    let entries = config.entries();
    assert_eq!(TrainConfig::from_entries(&entries, "test").unwrap(), config);
    assert!(config.to_text().contains("lr = 0.05\n"));

    let mut broken: BTreeMap<String, String> = entries.clone();
    broken.remove("seed");
    let err = TrainConfig::from_entries(&broken, "run/last")
        .unwrap_err()
        .to_string();
    assert!(err.contains("run/last") && err.contains("`seed`"), "{err}");
    broken.insert("seed".into(), "seven".into());
    let err = TrainConfig::from_entries(&broken, "run/last")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"seven\""), "{err}");
}

#[test]
fn bad_settings_are_refused_before_training() {
    let refused = |config: TrainConfig| config.validate().unwrap_err().to_string();
    let err = refused(TrainConfig {
        label_smoothing: 1.0,
        ..TrainConfig::default()
    });
    assert!(err.contains("label-smoothing"), "{err}");
    let err = refused(TrainConfig {
        momentum: -0.5,
        ..TrainConfig::default()
    });
    assert!(err.contains("momentum"), "{err}");
    let err = refused(TrainConfig {
        batch_size: 0,
        ..TrainConfig::default()
    });
    assert!(err.contains("batch-size"), "{err}");
    assert!(TrainConfig::default().validate().is_ok());
}

#[test]
fn data_choice_follows_the_stated_rules() {
    let dir = scratch("choice");
    // A folder with CIFAR-10's files is read as CIFAR-10 without --dataset.
    let set = synthetic::generate(4, 1).unwrap();
    let cifar = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&cifar).unwrap();
    for f in CifarKind::Cifar10
        .train_files()
        .iter()
        .chain([&CifarKind::Cifar10.test_file()])
    {
        data::write_cifar_bin(cifar.join(f), &set).unwrap();
    }
    let source = DataSource {
        dir: Some(dir.clone()),
        ..DataSource::default()
    };
    let (name, _, reason) = source.resolve().unwrap();
    assert_eq!(name, DatasetName::Cifar10);
    assert!(reason.contains("CIFAR-10 files found"));
    let loaded = source.load().unwrap();
    assert_eq!(loaded.split.train.len(), 20);
    assert!(
        loaded.description.contains("cifar10"),
        "{}",
        loaded.description
    );

    // An empty folder says what it looked for.
    let empty = scratch("choice-empty");
    let err = DataSource {
        dir: Some(empty),
        ..DataSource::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("data_batch_1.bin") && err.contains("--dataset mnist"),
        "{err}"
    );

    // The synthetic set is generated at the requested size, and says so.
    let loaded = DataSource {
        name: Some(DatasetName::Synthetic),
        train_images: Some(30),
        test_images: Some(10),
        ..DataSource::default()
    }
    .load()
    .unwrap();
    assert_eq!(
        (loaded.split.train.len(), loaded.split.test.len()),
        (30, 10)
    );
    assert!(loaded.description.contains("synthetic"));
}

#[test]
fn run_folder_refuses_to_overwrite_a_run_and_reports_unwritable_places() {
    let dir = scratch("rundir");
    let run = RunDir::create(dir.join("run")).unwrap();
    std::fs::write(run.last(), b"weights").unwrap();
    let err = RunDir::create(dir.join("run")).unwrap_err().to_string();
    assert!(
        err.contains("already holds a checkpoint") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.last()).unwrap(), b"weights");
    assert!(RunDir::open(dir.join("run")).is_ok());

    // A folder cannot be made under a file (this holds even for root).
    let file = dir.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = RunDir::create(file.join("run")).unwrap_err().to_string();
    assert!(err.contains("cannot create the run folder"), "{err}");
    let err = RunDir::open(dir.join("missing")).unwrap_err().to_string();
    assert!(err.contains("not found"), "{err}");

    assert_eq!(utc_stamp(0), "19700101-000000");
    assert_eq!(utc_stamp(951_782_400 + 3_661), "20000229-010101");
}

/// A gzipped tar holding `cifar-10-batches-bin/` with tiny files of every expected name.
fn make_archive(dir: &Path) -> PathBuf {
    let source = dir.join("source");
    let folder = source.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&folder).unwrap();
    let set = synthetic::generate(3, 2).unwrap();
    for f in CifarKind::Cifar10
        .train_files()
        .iter()
        .chain([&CifarKind::Cifar10.test_file()])
    {
        data::write_cifar_bin(folder.join(f), &set).unwrap();
    }
    let path = dir.join("made.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("cifar-10-batches-bin", &folder).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    path
}

fn local_archive(md5: &str) -> Archive {
    Archive {
        kind: CifarKind::Cifar10,
        // The discard port of this machine: nothing listens, so a fetch fails at once.
        url: "http://127.0.0.1:9/cifar-10-binary.tar.gz".into(),
        file_name: "cifar-10-binary.tar.gz".into(),
        md5: md5.into(),
        bytes: 1000,
    }
}

#[test]
fn download_without_network_says_where_to_put_the_archive() {
    let dir = scratch("offline");
    let archive = local_archive("00000000000000000000000000000000");
    let err = download::prepare(&archive, &dir.join("data"), false, Console::SILENT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no network access")
            && err.contains("cifar-10-binary.tar.gz")
            && err.contains("put it in")
            && err.contains("data_batch_1.bin"),
        "{err}"
    );
    // A fetch that cannot connect gives the same instructions, with the reason.
    let err = download::prepare(&archive, &dir.join("data"), true, Console::SILENT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("download failed") && err.contains("put it in"),
        "{err}"
    );
    assert!(!dir.join("data/cifar-10-binary.tar.gz").exists());
    assert_eq!(
        Archive::official(CifarKind::Cifar100).md5,
        "03b5dce01913d631647c71ecec9e9cb8"
    );
}

#[test]
fn a_local_archive_is_checked_against_its_md5_then_unpacked_and_loads() {
    let dir = scratch("unpack");
    let made = make_archive(&dir);
    let md5 = download::md5_hex(&made).unwrap();
    assert_eq!(md5.len(), 32);
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::copy(&made, data_dir.join("cifar-10-binary.tar.gz")).unwrap();

    // A wrong checksum is refused and nothing is unpacked.
    let err = download::prepare(
        &local_archive("0123456789abcdef0123456789abcdef"),
        &data_dir,
        false,
        Console::SILENT,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("does not match") && err.contains(&md5),
        "{err}"
    );
    assert!(!data_dir.join("cifar-10-batches-bin").exists());

    let folder =
        download::prepare(&local_archive(&md5), &data_dir, false, Console::SILENT).unwrap();
    assert_eq!(folder, data_dir.join("cifar-10-batches-bin"));
    let split = data::load_cifar10(&data_dir).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (15, 3));
    // Nothing is left of the staging folder, and a second call finds the set in place.
    let leftovers: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".unpack"))
        .collect();
    assert!(leftovers.is_empty());
    assert!(download::prepare(&local_archive(&md5), &data_dir, false, Console::SILENT).is_ok());
}

#[test]
fn inhibited_sites_are_the_relus_after_batch_norms_with_their_reading_layers() {
    use cenet::nn::resnet::ResNetConfig;
    use cenet::train::inhibited::{find_sites, Consumer};
    let ce = ResNetConfig::new(8, true).unwrap().build(2).unwrap();
    let sites = find_sites(&ce.graph);
    let described: Vec<(&str, &str, usize)> = sites
        .iter()
        .map(|s| (s.name.as_str(), s.path.as_str(), s.channels))
        .collect();
    assert_eq!(
        described,
        [
            ("bn1", "BN→CE→ReLU", 16),
            ("layer1.0.bn1", "BN→ReLU", 16),
            ("layer1.0.bn2", "BN→CE→+→ReLU", 16),
            ("layer2.0.bn1", "BN→ReLU", 32),
            ("layer2.0.bn2", "BN→CE→+→ReLU", 32),
            ("layer3.0.bn1", "BN→ReLU", 64),
            ("layer3.0.bn2", "BN→CE→+→ReLU", 64),
        ]
    );
    let conv = |w: &str| Consumer::Conv {
        weight: w.into(),
        groups: 1,
    };
    assert_eq!(sites[0].consumers, [conv("layer1.0.conv1.weight")]);
    assert_eq!(sites[1].consumers, [conv("layer1.0.conv2.weight")]);
    assert_eq!(
        sites[2].consumers,
        [
            conv("layer2.0.conv1.weight"),
            conv("layer2.0.downsample.0.weight")
        ]
    );
    assert_eq!(
        sites[6].consumers,
        [Consumer::Linear {
            weight: "fc.weight".into()
        }]
    );

    let plain = ResNetConfig::new(8, false).unwrap().build(2).unwrap();
    let paths: Vec<String> = find_sites(&plain.graph)
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(paths[0], "BN→ReLU");
    assert_eq!(paths[2], "BN→+→ReLU");

    // MobileNetV2: the ReLU6 sites, whose expansion outputs feed depthwise convolutions.
    use cenet::nn::mobilenet::{CePlacement, MobileNetV2Config};
    let config = MobileNetV2Config::new(0.5, true).unwrap();
    let mobile = config.with_ce_placement(CePlacement::BeforeRelu6);
    let sites = find_sites(&mobile.build(1).unwrap().graph);
    assert_eq!(sites[0].name, "features.0.1");
    assert_eq!(sites[0].path, "BN→CE→ReLU6");
    assert_eq!(
        sites[0].consumers,
        [Consumer::Conv {
            weight: "features.1.conv.0.0.weight".into(),
            groups: sites[0].channels,
        }]
    );
    let last = sites.last().unwrap();
    assert_eq!(last.name, "features.18.1");
    assert_eq!(
        last.consumers,
        [Consumer::Linear {
            weight: "classifier.1.weight".into()
        }]
    );
}

#[test]
fn zeroing_input_channels_touches_only_those_channels() {
    use cenet::train::channel_drop::zero_input_channels;
    // A conv weight [Cout 2, Cin 3, 1, 2]: channel 1 of each output filter is zeroed.
    let mut w: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    zero_input_channels(&mut w, &[2, 3, 1, 2], 1, &[1]);
    assert_eq!(w, [1., 2., 0., 0., 5., 6., 7., 8., 0., 0., 11., 12.]);
    // A linear weight [out 2, in 3]: column 2.
    let mut w = vec![1.0f32; 6];
    zero_input_channels(&mut w, &[2, 3], 1, &[2]);
    assert_eq!(w, [1., 1., 0., 1., 1., 0.]);
    // A depthwise weight [C 3, 1, 1, 2]: channel c is read only by filter c.
    let mut w: Vec<f32> = (1..=6).map(|v| v as f32).collect();
    zero_input_channels(&mut w, &[3, 1, 1, 2], 3, &[0, 2]);
    assert_eq!(w, [0., 0., 3., 4., 0., 0.]);
    // Two groups of a weight [Cout 4, Cin/2 = 2, 1, 1]: input channel 3 is slot 1 of the
    // second group, read by outputs 2 and 3.
    let mut w = vec![1.0f32; 8];
    zero_input_channels(&mut w, &[4, 2, 1, 1], 2, &[3]);
    assert_eq!(w, [1., 1., 1., 1., 1., 0., 1., 0.]);
}

#[test]
fn inhibited_shares_count_channels_below_absolute_and_relative_thresholds() {
    use cenet::graph::NodeId;
    use cenet::train::inhibited::{InhibitedReport, Site, SiteStats};
    let site = |name: &str, c: usize| Site {
        name: name.into(),
        path: "BN→ReLU".into(),
        relu: NodeId(0),
        channels: c,
        consumers: vec![],
    };
    let report = InhibitedReport {
        sites: vec![
            SiteStats {
                site: site("a", 4),
                mean_abs: vec![0.0005, 0.005, 0.05, 1.0],
            },
            SiteStats {
                site: site("b", 2),
                mean_abs: vec![20.0, 0.1],
            },
        ],
    };
    let a = &report.sites[0];
    assert_eq!(
        (
            a.below_absolute(1e-3),
            a.below_absolute(1e-2),
            a.below_absolute(1e-1)
        ),
        (1, 2, 3)
    );
    assert_eq!((a.below_relative(1e-3), a.below_relative(1e-2)), (1, 2));
    let b = &report.sites[1];
    // Relative to b's largest channel (20): 0.1 < 0.01·20 but not < 0.001·20.
    assert_eq!((b.below_relative(1e-3), b.below_relative(1e-2)), (0, 1));
    assert_eq!(a.weakest_first(), [0, 1, 2, 3]);
    assert_eq!(report.total_channels(), 6);
    assert!((report.overall_absolute(1e-1) - 3.0 / 6.0).abs() < 1e-12);
    assert!((report.overall_relative(1e-2) - 3.0 / 6.0).abs() < 1e-12);
    let text = report.to_text();
    assert!(
        text.contains("overall") && text.contains("rel<1e-2"),
        "{text}"
    );
    let csv = report.to_csv();
    assert_eq!(csv.lines().count(), 4, "header, two sites, overall:\n{csv}");
}

#[test]
fn with_no_data_given_and_none_in_the_default_folder_the_runner_uses_the_synthetic_set() {
    // The tests run in the crate's root, which has no ./data folder.
    assert!(!std::path::Path::new("data/cifar-10-batches-bin").exists());
    let (name, dir, why) = cenet::train::DataSource::default().resolve().unwrap();
    assert_eq!((name, dir), (cenet::train::DatasetName::Synthetic, None));
    assert!(
        why.contains("no --data given") && why.contains("download"),
        "{why}"
    );
}

"""The small search lake the search tests share: 16 NGA-shaped paintings (two photos of a person, the rest
generated patterns) run through the whole pipeline (catalog, images, faces, pretrained efficientnet_lite0
embeddings, fusion, index) once per test process.

``PAINTINGS`` lists them (objectids 101-116); ``FACE_IDS`` are the two with a face; ``shared_search_lake()``
returns the built lake's ``Settings`` (a temporary folder removed at exit).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from dagster import DagsterInstance
from PIL import Image

from artsim_pipeline.config import Settings
from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror

REMBRANDT, VERMEER, MONET = "Rembrandt van Rijn", "Johannes Vermeer", "Claude Monet"
PAINTINGS = [
    Painting(101, title="Self-Portrait", artist=REMBRANDT, styles=["Baroque"], beginyear=1659, width=160, height=160),
    Painting(102, title="Portrait of a Lady", artist=REMBRANDT, styles=["Baroque"], beginyear=1632, width=160,
             height=160),
    Painting(103, title="Old Man", artist=REMBRANDT, styles=["Baroque"], medium="oil on panel", beginyear=1645),
    Painting(104, title="Girl with a Flute", artist=VERMEER, styles=["Baroque"], medium="oil on panel", beginyear=1665),
    Painting(105, title="Woman Holding a Balance", artist=VERMEER, styles=["Baroque"], beginyear=1664),
    Painting(106, title="Watson and the Shark", artist="John Singleton Copley", styles=["Romanticism"], beginyear=1778),
    Painting(107, title="The Japanese Footbridge", artist=MONET, styles=["Impressionism"], beginyear=1899),
    Painting(108, title="Woman with a Parasol", artist=MONET, styles=["Impressionism"], beginyear=1875),
    Painting(109, title="Rouen Cathedral", artist=MONET, styles=["Impressionism"], beginyear=1894),
    Painting(110, title="Ginevra de' Benci", artist="Leonardo da Vinci", styles=["Renaissance"], medium="oil on panel",
             beginyear=1474),
    Painting(111, title="Madonna", artist="Raphael", styles=["Renaissance"], medium="tempera on panel", beginyear=1505),
    Painting(112, title="The Skater", artist="Gilbert Stuart", styles=["Neoclassicism"], beginyear=1782),
    Painting(113, title="Breezing Up", artist="Winslow Homer", styles=["Realism"], beginyear=1876),
    Painting(114, title="Number 1", artist="Jackson Pollock", styles=["Abstract Expressionism"],
             medium="oil, enamel and aluminum on canvas", beginyear=1950),
    Painting(115, title="Orange and Tan", artist="Mark Rothko", styles=["Abstract Expressionism"], beginyear=1954),
    Painting(116, title="The Dance Class", artist="Édgar Degas", styles=["Impressionism"], medium="pastel on paper",
             beginyear=1873),
]
FACE_IDS = (101, 102)  # their images are photos of a person (faces), the others generated patterns

_LAKES: dict[str, Settings] = {}


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def build_search_lake(root: Path) -> Settings:
    """Mirror of PAINTINGS -> full pipeline run (catalog, images, faces, embeddings, fusion, index)."""
    from artsim_pipeline.definitions import build_definitions
    from artsim_pipeline.runner import PipelineRunner

    mirror = write_mirror(root / "mirror", PAINTINGS)
    photo = astronaut()
    photo.resize((160, 160)).save(mirror / "images" / "u00000101-test.jpg", quality=90)
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((160, 160)).save(
        mirror / "images" / "u00000102-test.jpg", quality=90)
    settings = Settings(nga_source=str(mirror), data_lake=root / "lake", limit=0, min_side=64, batch_size=64,
                        models=("efficientnet_lite0",), weights="pretrained", device="cpu", embed_batch_size=8)
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(home)) as instance:
        PipelineRunner(build_definitions(settings), settings, instance, echo=lambda _: None).run()
    return settings


def shared_search_lake() -> Settings:
    """One built lake per test process (the core search tests and the CLI tests)."""
    if "lake" not in _LAKES:
        root = Path(tempfile.mkdtemp(prefix="artsim-search-test-"))
        atexit.register(shutil.rmtree, root, True)
        _LAKES["lake"] = build_search_lake(root)
    return _LAKES["lake"]
